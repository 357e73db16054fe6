"""The blob store contract, on the filesystem backend."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pypacs.errors import OutOfResources, StoreError
from pypacs.store import BlobKey, open_store
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
    store = FilesystemStore(tmp_path)
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
