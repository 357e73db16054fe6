"""``pypacs serve`` with its blobs in an S3-compatible object store (moto_server), driven by
DCMTK and HTTP: stored, retrieved byte for byte, deleted, checked; a failing object store
refuses the instance (A700) and keeps nothing; a large instance streams in bounded memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from dicomgen import Spec, dataset_bytes, write
from helpers import index_rows, run_pypacs, wait_for
from memory import MB, peak_rss
from rawpeer import rss
from s3 import ACCESS_KEY, SECRET_KEY, Moto, Proxy
from serving import RunningServer, start_pypacs

PREFIX = "site/a"


@pytest.fixture
def proxy(moto: Moto) -> Iterator[Proxy]:
    front = Proxy(int(moto.endpoint.rsplit(":", 1)[1]))
    yield front
    front.close()


@pytest.fixture
def bucket(moto: Moto, s3_env: dict[str, str]) -> str:
    return moto.new_bucket()


@pytest.fixture
def s3_pacs(tmp_path: Path, bucket: str, proxy: Proxy) -> Iterator[RunningServer]:
    server = start_pypacs(tmp_path / "data", *s3_flags(bucket, proxy.endpoint), timeout=120)
    yield server
    server.kill()


def s3_flags(bucket: str, endpoint: str) -> list[str]:
    return ["--storage-url", f"s3://{bucket}/{PREFIX}", "--s3-endpoint-url", endpoint]


def storescu(port: int, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-v", "-aec", "PYPACS", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def blobs(moto: Moto, bucket: str) -> dict[str, bytes]:
    return {k: v for k, v in moto.objects(bucket).items() if k.startswith(PREFIX + "/")}


def test_stored_retrieved_deleted_and_checked(
    s3_pacs: RunningServer, moto: Moto, bucket: str, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    sent = [write(Spec("S3P", "Object^Store", 1, 1, i, rows=64), tmp_path) for i in range(3)]
    done = storescu(s3_pacs.dicom_port, *sent)
    assert done.returncode == 0, done.stderr
    rows = {r["sop_instance_uid"]: r for r in index_rows(s3_pacs.database_url, "instance")}
    stored = blobs(moto, bucket)
    assert sorted(stored) == sorted(f"{PREFIX}/{r['blob_key']}" for r in rows.values())
    for path in sent:
        uid = path.stem
        blob = stored[f"{PREFIX}/{rows[uid]['blob_key']}"]
        assert blob.endswith(dataset_bytes(path)) and len(blob) == rows[uid]["blob_size"]

    # C-GET: the data sets as sent.
    got = tmp_path / "got"
    got.mkdir()
    study_uid = str(dcmread(sent[0]).StudyInstanceUID)
    result = subprocess.run(
        ["getscu", "-S", "-aec", "PYPACS", "-od", str(got), "127.0.0.1", str(s3_pacs.dicom_port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list(got.iterdir())) == 3
    by_digest = {hashlib.sha256(dataset_bytes(p)).hexdigest() for p in got.iterdir()}
    assert by_digest == {hashlib.sha256(dataset_bytes(p)).hexdigest() for p in sent}

    # WADO-RS: the stored object, byte for byte.
    base = f"http://127.0.0.1:{s3_pacs.http_port}/dicom-web/studies/{study_uid}"
    ds0 = dcmread(sent[0])
    instance = f"{base}/series/{ds0.SeriesInstanceUID}/instances/{ds0.SOPInstanceUID}"
    answer = httpx.get(instance, headers={"Accept": "application/dicom"}, timeout=60)
    assert answer.status_code == 200
    assert answer.content == stored[f"{PREFIX}/{rows[sent[0].stem]['blob_key']}"]

    # DELETE removes the index rows and the objects.
    assert httpx.delete(base, timeout=60).status_code == 204
    assert index_rows(s3_pacs.database_url, "instance") == []
    wait_for(lambda: blobs(moto, bucket) == {}, timeout=60, what="the objects to go")

    # An object written by a node that crashed before indexing it.
    s3_pacs.stop()
    orphan = write(Spec("S3P", "Object^Store", 2, 1, 1, rows=64), tmp_path)
    orphan_key = "cd/cd" + "0123456789abcdef0123456789abcd"
    moto.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{orphan_key}", Body=orphan.read_bytes())
    flags = ["check", "--data", str(s3_pacs.data), *s3_flags(bucket, moto.endpoint)]
    young = run_pypacs(*flags, cwd=tmp_path, env=s3_env)
    assert young.returncode == 0, young.stderr
    assert f"not indexed yet {orphan_key}" in young.stdout
    assert "0 re-indexed, 0 missing" in young.stdout
    old = run_pypacs(*flags, "--s3-orphan-grace-seconds", "0", cwd=tmp_path, env=s3_env)
    assert old.returncode == 0, old.stderr
    assert f"re-indexed {dcmread(orphan).SOPInstanceUID}" in old.stdout
    assert "1 re-indexed, 0 missing" in old.stdout
    [row] = index_rows(s3_pacs.database_url, "instance")
    assert row["blob_key"] == orphan_key
    for text in (young.stdout, young.stderr, old.stdout, old.stderr, s3_pacs.log()):
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_a_failing_object_store_refuses_the_instance_and_keeps_nothing(
    s3_pacs: RunningServer, moto: Moto, bucket: str, proxy: Proxy, tmp_path: Path
) -> None:
    path = write(Spec("S3F", "Broken^Link", 1, 1, 1, rows=256), tmp_path)  # 128 KiB of pixels
    proxy.cut(after=32 * 1024)
    refused = storescu(s3_pacs.dicom_port, path)
    output = refused.stdout + refused.stderr
    # PS3.4 B.2.3: Refused, Out of Resources (A700) when the blob cannot be written.
    assert "0xa700" in output.lower() or "OutOfResources" in output, output
    assert index_rows(s3_pacs.database_url, "instance") == []
    proxy.healthy()
    assert blobs(moto, bucket) == {}
    assert moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    stored = storescu(s3_pacs.dicom_port, path)
    assert stored.returncode == 0 and "0xa700" not in (stored.stdout + stored.stderr).lower()
    [row] = index_rows(s3_pacs.database_url, "instance")
    [blob] = blobs(moto, bucket).values()
    assert blob.endswith(dataset_bytes(path)) and len(blob) == row["blob_size"]
    log = s3_pacs.log()
    assert ACCESS_KEY not in log and SECRET_KEY not in log


def test_a_large_instance_streams_to_the_object_store_in_bounded_memory(
    s3_pacs: RunningServer, moto: Moto, bucket: str, tmp_path: Path
) -> None:
    path = write(Spec("S3L", "Large^Instance", 1, 1, 1, rows=10240), tmp_path)  # 200 MiB
    size = os.path.getsize(path)
    assert size > 200 * MB
    pid = s3_pacs.proc.pid
    idle = rss(pid)
    done = storescu(s3_pacs.dicom_port, path)
    assert done.returncode == 0, done.stderr
    grown = peak_rss(pid) - idle
    assert grown < 40 * MB, f"peak RSS grew by {grown / MB:.1f} MiB"
    [row] = index_rows(s3_pacs.database_url, "instance")
    head = moto.client().head_object(Bucket=bucket, Key=f"{PREFIX}/{row['blob_key']}")
    assert head["ContentLength"] == row["blob_size"] > 200 * MB
