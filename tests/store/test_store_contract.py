"""The blob store contract, run on every backend: files ("fs") and S3 on moto_server ("s3")."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypacs.errors import StoreError
from pypacs.store import BlobKey, BlobStore, open_store
from pypacs.store.filesystem import FilesystemStore
from pypacs.store.s3 import PART_SIZE, S3Store

from s3 import Moto


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, spool: Path) -> Iterator[BlobStore]:
    if request.param == "fs":
        yield FilesystemStore(tmp_path / "blobs", fsync=False)
        return
    request.getfixturevalue("s3_env")
    moto: Moto = request.getfixturevalue("moto")
    bucket = moto.new_bucket()
    yield S3Store(bucket, "archive/one", endpoint_url=moto.endpoint, spool_dir=str(spool))


def leftovers(store: BlobStore, tmp_path: Path, spool: Path) -> list[str]:
    """Anything a write could leave behind besides committed blobs."""
    if isinstance(store, FilesystemStore):
        return [str(p) for p in store.root.rglob("*.tmp")]
    assert isinstance(store, S3Store)
    uploads = store._client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [u["Key"] for u in uploads] + os.listdir(spool)


def all_keys(store: BlobStore) -> list[BlobKey]:
    return [key for _, keys in store.scan() for key in keys]


def test_put_open_size_exists_delete(store: BlobStore) -> None:
    key, size = store.put([b"abc", memoryview(b"defg"), b""])
    assert size == 7
    assert store.exists(key) and store.size(key) == 7
    with store.open(key) as fp:
        assert fp.read() == b"abcdefg"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is not an error
    with pytest.raises(StoreError):
        store.open(key)


def test_an_empty_blob(store: BlobStore) -> None:
    key, size = store.put([])
    assert size == 0 and store.size(key) == 0
    with store.open(key) as fp:
        assert fp.read() == b""


def test_read_ranges_seek_and_tell(store: BlobStore) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)
    key, _ = store.put([data])
    with store.open(key) as fp:
        assert fp.read(10) == data[:10]
        assert fp.tell() == 10
        fp.seek(2 * 1024 * 1024)
        assert fp.read(5) == data[2 * 1024 * 1024 : 2 * 1024 * 1024 + 5]
        fp.seek(-7, io.SEEK_END)
        assert fp.read() == data[-7:]
        assert fp.read(1) == b""
        fp.seek(100)
        fp.seek(50, io.SEEK_CUR)
        assert fp.tell() == 150
        assert fp.read(1_000_000) == data[150:1_000_150]
        fp.seek(0)
        assert hashlib.sha256(fp.read()).digest() == hashlib.sha256(data).digest()


def test_keys_are_generated_fanned_out_and_grouped_by_scan(store: BlobStore) -> None:
    keys = {store.put([f"blob {i}".encode()])[0] for i in range(40)}
    assert len(keys) == 40
    for key in keys:
        folder, name = key.split("/")
        assert folder == name[:2] and len(name) == 32 and int(name, 16) >= 0
    groups = list(store.scan())
    assert len(groups) == 256
    assert [prefix for prefix, _ in groups] == [f"{i:02x}/" for i in range(256)]
    assert sorted(k for _, ks in groups for k in ks) == sorted(keys)
    for prefix, group in groups:
        low, high = store.prefix_bounds(prefix)
        for key in keys:
            assert (low <= key < high) == (key in group)


def test_missing_keys(store: BlobStore) -> None:
    key = BlobKey("ab/ab" + "0" * 30)
    assert not store.exists(key)
    with pytest.raises(StoreError, match="ab/ab0"):
        store.open(key)
    with pytest.raises(StoreError, match="ab/ab0"):
        store.size(key)
    with pytest.raises(StoreError):
        store.age(key)
    store.delete(key)


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "ab/" + "Z" * 32, "ab"])
def test_keys_not_of_the_store_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(StoreError, match="not a blob key"):
        store.open(BlobKey(key))
    with pytest.raises(StoreError, match="not a blob key"):
        store.delete(BlobKey(key))


def test_begin_write_commit(store: BlobStore, tmp_path: Path, spool: Path) -> None:
    pending = store.begin()
    pending.write(b"DICM")
    pending.write(memoryview(b"-header-and-rest"))
    assert pending.size == 20
    assert bytes(pending.read_view()) == b"DICM-header-and-rest"
    with pending.reader() as fp:
        assert fp.read(4) == b"DICM"
    pending.write(b"!")  # writes go on after reading back
    assert bytes(pending.read_view()) == b"DICM-header-and-rest!"
    assert all_keys(store) == []  # invisible until committed
    key, size = pending.commit()
    assert size == 21
    with store.open(key) as fp:
        assert fp.read() == b"DICM-header-and-rest!"
    assert all_keys(store) == [key]
    assert 0 <= store.age(key) < 600
    assert leftovers(store, tmp_path, spool) == []


def test_abandon_leaves_nothing(store: BlobStore, tmp_path: Path, spool: Path) -> None:
    pending = store.begin()
    pending.write(b"x" * 100_000)
    view = pending.read_view()
    assert len(view) == 100_000
    del view
    pending.abandon()
    pending.abandon()  # twice is fine
    assert all_keys(store) == []
    assert leftovers(store, tmp_path, spool) == []


def test_large_blob_in_parts(store: BlobStore, tmp_path: Path, spool: Path) -> None:
    # 40 MiB: on S3 a multipart upload of three 16 MiB parts, sent in parallel.
    chunk = secrets.token_bytes(1024 * 1024)
    digest = hashlib.sha256()
    pending = store.begin()
    for i in range(40):
        piece = bytes([i]) + chunk[1:]
        pending.write(piece)
        digest.update(piece)
    assert pending.size == 40 * 1024 * 1024 > 2 * PART_SIZE
    key, size = pending.commit()
    assert size == 40 * 1024 * 1024 == store.size(key)
    with store.open(key) as fp:
        fp.seek(PART_SIZE - 2)  # across the first parts' boundary
        assert fp.read(4) == chunk[-2:] + bytes([16]) + chunk[1:2]
        fp.seek(0)
        back = hashlib.sha256()
        while block := fp.read(5 * 1024 * 1024):
            back.update(block)
    assert back.digest() == digest.digest()
    assert leftovers(store, tmp_path, spool) == []


def test_open_store_by_url(tmp_path: Path, moto: Moto, s3_env: dict[str, str]) -> None:
    assert isinstance(open_store(f"file://{tmp_path}/b"), FilesystemStore)
    bucket = moto.new_bucket()
    store = open_store(f"s3://{bucket}/some/prefix/", endpoint_url=moto.endpoint)
    assert isinstance(store, S3Store)
    key, _ = store.put([b"here"])
    assert moto.objects(bucket) == {f"some/prefix/{key}": b"here"}
    bare = open_store(f"s3://{bucket}", endpoint_url=moto.endpoint)
    assert all_keys(bare) == []  # the prefix's objects are not "ab/<hex>" at the top
    with pytest.raises(StoreError, match="expected s3://BUCKET/PREFIX"):
        open_store("s3:///prefix")
    with pytest.raises(StoreError, match="unknown blob store scheme 'ftp'"):
        open_store("ftp://somewhere/blobs")
