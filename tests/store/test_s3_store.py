"""What is particular to the S3 store: start-up errors, a failing or stalled object store,
ranged reads, and leftovers of interrupted multipart uploads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import pypacs.store.s3 as s3_module
from pypacs.errors import StoreError
from pypacs.store.s3 import PART_SIZE, S3Store

from qrscp import free_port
from s3 import ACCESS_KEY, SECRET_KEY, Moto, Proxy, start_moto


@pytest.fixture
def proxy(moto: Moto) -> Iterator[Proxy]:
    front = Proxy(int(moto.endpoint.rsplit(":", 1)[1]))
    yield front
    front.close()


def test_a_missing_bucket_is_a_clear_start_up_error(moto: Moto, s3_env: dict[str, str]) -> None:
    with pytest.raises(StoreError) as caught:
        S3Store("no-such-bucket", "p", endpoint_url=moto.endpoint)
    message = str(caught.value)
    assert "s3://no-such-bucket/p/" in message and moto.endpoint in message
    assert message.endswith(": no such bucket")


def test_an_unreachable_endpoint_is_a_clear_start_up_error(s3_env: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot use the object store s3://b/ at .*Connect"):
        S3Store("b", endpoint_url=endpoint, attempts=1)
    assert time.monotonic() - started < 60


def test_refused_credentials_are_named_without_them(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks signatures against its IAM users once this is set: ours is unknown there.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    strict = start_moto(tmp_path)
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        with pytest.raises(StoreError) as caught:
            S3Store("any", "p", endpoint_url=strict.endpoint)
    finally:
        strict.stop()
    message = str(caught.value)
    assert "s3://any/p/" in message and "403" in message
    assert ACCESS_KEY not in message and SECRET_KEY not in message


def test_no_credentials_at_all(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match=r"s3://b/.*NoCredentialsError"):
        S3Store("b", endpoint_url=moto.endpoint, region="us-east-1")


@pytest.mark.parametrize("size", [200_000, 2 * PART_SIZE + 5])
def test_a_connection_cut_during_the_upload_fails_the_commit(
    moto: Moto, s3_env: dict[str, str], proxy: Proxy, spool: Path, size: int
) -> None:
    bucket = moto.new_bucket()
    store = S3Store(bucket, "p", endpoint_url=proxy.endpoint, spool_dir=str(spool), attempts=2)
    pending = store.begin()
    pending.write(b"\x01" * size)
    proxy.cut(after=64 * 1024)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot write blob {pending.key} in s3://{bucket}/p/"):
        pending.commit()
    assert time.monotonic() - started < 120
    proxy.healthy()
    assert moto.objects(bucket) == {}
    assert moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(spool.iterdir()) == []
    # Healthy again: the same bytes go through.
    key, _ = store.put([b"\x01" * size])
    assert store.size(key) == size


def test_a_stalled_object_store_fails_the_commit_in_bounded_time(
    moto: Moto, s3_env: dict[str, str], proxy: Proxy, spool: Path
) -> None:
    bucket = moto.new_bucket()
    store = S3Store(
        bucket, endpoint_url=proxy.endpoint, spool_dir=str(spool), read_timeout=2, attempts=2
    )
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(StoreError, match="Read timeout"):
        store.put([b"held" * 1000])
    assert time.monotonic() - started < 60
    proxy.healthy()
    assert moto.objects(bucket) == {}


def test_reading_a_header_does_not_fetch_the_whole_object(
    moto: Moto, s3_env: dict[str, str], proxy: Proxy
) -> None:
    bucket = moto.new_bucket()
    store = S3Store(bucket, endpoint_url=proxy.endpoint)
    data = bytes(range(256)) * (40 * 4096)  # 40 MiB
    key, _ = store.put([data])
    proxy.reset_counts()
    with store.open(key) as fp:
        assert fp.read(132) == data[:132]
        fp.seek(30 * 1024 * 1024)
        assert fp.read(1000) == data[30 * 1024 * 1024 : 30 * 1024 * 1024 + 1000]
    # Two read-aheads of 4 MiB at most, not 40 MiB.
    assert proxy.downstream_bytes < 9 * 1024 * 1024


def test_scan_removes_stale_multipart_uploads_only(
    moto: Moto, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto.new_bucket()
    store = S3Store(bucket, "p", endpoint_url=moto.endpoint)
    s3 = moto.client()
    s3.create_multipart_upload(Bucket=bucket, Key="p/ab/ab" + "1" * 30)
    # moto dates every upload's Initiated in 2010: the threshold is moved instead of the age.
    monkeypatch.setattr(s3_module, "_STALE_UPLOAD", timedelta(days=366 * 100))
    list(store.scan())
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1  # may be live
    monkeypatch.setattr(s3_module, "_STALE_UPLOAD", timedelta(hours=1))
    list(store.scan())
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_scan_ignores_other_objects_under_the_prefix(moto: Moto, s3_env: dict[str, str]) -> None:
    bucket = moto.new_bucket()
    store = S3Store(bucket, "p", endpoint_url=moto.endpoint)
    key, _ = store.put([b"x"])
    s3 = moto.client()
    for foreign in ("p/README", "p/ab/not-ours", "other/" + key):
        s3.put_object(Bucket=bucket, Key=foreign, Body=b"?")
    assert [k for _, keys in store.scan() for k in keys] == [key]
