"""The blob store contract, on the filesystem backend."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from pypacs.errors import OutOfResources, StoreError
from pypacs.store import BlobKey, open_store
from pypacs.store.filesystem import _SPARES as SPARES
from pypacs.store.filesystem import FilesystemStore


def test_put_open_delete_round_trip(tmp_path: Path) -> None:
    store = open_store(tmp_path / "blobs")
    key, size = store.put([b"abc", memoryview(b"defg")])
    assert size == 7
    assert store.exists(key) and store.size(key) == 7
    with store.open(key) as fp:
        assert fp.read() == b"abcdefg"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is not an error


def test_keys_are_generated_and_fanned_out(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    keys = {store.put([b"x"])[0] for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        folder, name = key.split("/")
        assert folder == name[:2] and len(name) == 32
        assert (tmp_path / key).is_file()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 256


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "ab/cd/../../../x",
        "ab/cd/" + "a" * 31 + "/",
        "ab/cd/" + "Z" * 32,
    ],
)
def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    store = FilesystemStore(tmp_path)
    with pytest.raises(StoreError, match="not a blob key"):
        store.open(BlobKey(key))
    with pytest.raises(StoreError):
        store.delete(BlobKey(key))


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)

    def chunks():
        yield b"partial"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutOfResources, match="no room"):
        store.put(chunks())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_scan_groups_by_folder_and_drops_temporary_leftovers(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, unnamed_files=False)  # writes under temporary names
    key, _ = store.put([b"data"])
    leftover = tmp_path / key.rsplit("/", 1)[0] / ("f" * 32 + ".tmp")
    leftover.write_bytes(b"half")
    under_way = store.begin()  # this process is writing it: left alone
    under_way.write(b"under way")
    groups = list(store.scan())
    assert [g for g in groups if g[1]] == [(key[:3], [key])]
    assert len(groups) == 256
    assert not leftover.exists()
    written, _ = under_way.commit()
    assert store.exists(written)
    low, high = store.prefix_bounds(key[:3])
    assert low <= key < high
    other = ("00" if key[:2] != "00" else "01") + "/" + "0" * 32
    assert not (low <= other < high)


def test_unknown_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown blob store scheme 'ftp'"):
        open_store("ftp://somewhere/blobs")


def test_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/b")
    key, _ = store.put([b"1"])
    assert os.path.isfile(tmp_path / "b" / key)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_restocked(store: FilesystemStore) -> None:
    deadline = time.monotonic() + 10
    while store._refilling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not store._refilling


def test_a_blob_being_written_has_no_name_until_placed(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    pending = store.begin()
    pending.write(b"dataset ")
    pending.write(memoryview(b"bytes"))
    pending.written()
    assert files(tmp_path) == []  # a crash now leaves nothing to clean up
    with pending.reader() as fp:
        assert fp.read() == b"dataset bytes"
    assert bytes(pending.read_view()) == b"dataset bytes"
    key, size = pending.place()
    assert (size, files(tmp_path)) == (13, [tmp_path / key])
    pending.settle()
    with store.open(key) as fp:
        assert fp.read() == b"dataset bytes"
    dropped = store.begin()
    dropped.write(b"never stored")
    dropped.abandon()
    assert files(tmp_path) == [tmp_path / key]


def test_without_unnamed_files_a_temporary_name_is_renamed(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, unnamed_files=False)
    pending = store.begin()
    pending.write(b"data")
    [tmp] = files(tmp_path)
    assert tmp.name.endswith(".tmp") and tmp.read_bytes() == b"data"
    key, _ = pending.commit()
    assert files(tmp_path) == [tmp_path / key]
    dropped = store.begin()
    dropped.write(b"x")
    dropped.abandon()
    assert files(tmp_path) == [tmp_path / key]


def test_spare_files_are_few_and_closed_with_the_store(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    before = descriptors()
    keys = []
    for n in range(40):
        pending = store.begin()
        pending.write(b"%d" % n)
        keys.append(pending.commit()[0])
        wait_restocked(store)
        assert 1 <= len(store._spares) <= SPARES
    assert descriptors() <= before + SPARES
    assert files(tmp_path) == sorted(tmp_path / key for key in keys)  # spares have no name
    store.close()
    assert descriptors() <= before and store._spares == []
    pending = store.begin()  # still usable: a file made on the spot
    pending.write(b"after close")
    key, _ = pending.commit()
    assert (tmp_path / key).read_bytes() == b"after close"


def test_a_forked_child_does_not_write_into_its_parents_spares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path)
    store.begin().abandon()
    store._restock()
    wait_restocked(store)
    # The parent's view of its spares (a fork shares each open file with the child).
    parents = [os.dup(fd) for fd in store._spares]
    assert parents
    monkeypatch.setattr(os, "getpid", lambda: -7)  # as in a child after fork
    pending = store.begin()
    pending.write(b"child")
    key, _ = pending.commit()
    assert (tmp_path / key).read_bytes() == b"child"
    for fd in parents:  # none written, none given a name
        assert (os.fstat(fd).st_size, os.fstat(fd).st_nlink) == (0, 0)
        os.close(fd)
