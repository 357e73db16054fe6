"""STOW-RS bounded under abuse, against a running pypacs: a part is written to disk as it
arrives, so a 300 MiB instance is stored and retrieved whole while the server's peak
resident set (VmHWM) grows by a small fraction of it; a part past [web] stow_max_part_bytes
or a part past [web] stow_max_parts is answered 413 in the one error shape."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from dicomgen import Spec, make_dataset
from helpers import blob_files, index_counts, index_rows, tmp_files
from memory import MB, peak_rss
from serving import RunningServer, start_pypacs

BOUNDARY = "pypacs-stow-limits"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ROWS = COLUMNS = 10240
FRAMES = 3  # 3 x 10240 x 10240 bytes: 300 MiB of pixel data
CHUNK = 1 << 20


def header(number: int, frames: int = FRAMES, side: int = ROWS) -> tuple[Dataset, bytes]:
    """An 8-bit multi-frame instance up to its pixel data element's header, whose value
    (``frames`` x ``side`` x ``side`` zero bytes) the caller sends."""
    ds = make_dataset(Spec("BIG", "Big^Part", 1, 1, number))
    del ds.PixelData
    ds.Rows = ds.Columns = side
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.NumberOfFrames = frames
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    # (7FE0,0010) OB, explicit VR little endian: tag, VR, 2 reserved bytes, 4-byte length.
    length = frames * side * side
    return ds, out.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length)


def small(number: int) -> bytes:
    out = io.BytesIO()
    make_dataset(Spec("BIG", "Big^Part", 1, 2, number)).save_as(out, enforce_file_format=True)
    return out.getvalue()


class Body:
    """A multipart body sent as it is generated; ``digest`` and ``size`` are those of the
    one large part's content, known once it has been sent."""

    def __init__(self, head: bytes, zeros: int) -> None:
        self.head, self.zeros = head, zeros
        self.digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        self._sent(self.head)
        yield self.head
        block = bytes(CHUNK)
        left = self.zeros
        while left:
            piece = block[: min(left, CHUNK)]
            self._sent(piece)
            yield piece
            left -= len(piece)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    def _sent(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)


def multipart(parts: Sequence[bytes]) -> bytes:
    out = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    return out + f"--{BOUNDARY}--\r\n".encode()


def stow(srv: RunningServer, body: bytes | Body) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{srv.http_port}/dicom-web/studies",
        content=body if isinstance(body, bytes) else iter(body),
        headers={"content-type": CONTENT_TYPE, "accept": "application/dicom+json"},
        timeout=600,
    )


def error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 413, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["status"] == 413 and body["code"] == "too-large"
    return body


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[RunningServer]:
    config = tmp_path / "pypacs.toml"
    config.write_text("[web]\nstow_max_parts = 3\nstow_max_part_bytes = 335544320\n")
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    yield srv
    srv.kill()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[RunningServer]:
    """Default settings."""
    srv = start_pypacs(tmp_path / "plain")
    yield srv
    srv.kill()


def test_a_300_mib_part_goes_to_disk_not_to_memory(plain: RunningServer) -> None:
    pacs = plain
    assert stow(pacs, multipart([small(1)])).status_code == 200  # imports and threads warm
    before = peak_rss(pacs.proc.pid)
    ds, head = header(1)
    body = Body(head, FRAMES * ROWS * COLUMNS)
    response = stow(pacs, body)
    assert response.status_code == 200, response.text
    grown = peak_rss(pacs.proc.pid) - before
    assert body.size > 300 * MB
    # Before, memory held the whole part and more: 1.19 GB for one of 500 MiB.
    assert grown < 150 * MB, f"the server grew by {grown / MB:.0f} MB for {body.size} bytes"

    (row,) = [r for r in index_rows(pacs.database_url, "instance") if r["blob_size"] > MB]
    assert row["sop_instance_uid"] == ds.SOPInstanceUID
    assert row["blob_size"] == body.size
    assert tmp_files(pacs.data) == []
    # Retrieved as stored, byte for byte (WADO-URI sends the stored file).
    digest, size = hashlib.sha256(), 0
    params = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        "contentType": "application/dicom",
    }
    with httpx.stream(
        "GET", f"http://127.0.0.1:{pacs.http_port}/wado", params=params, timeout=600
    ) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    assert size == body.size
    assert digest.hexdigest() == body.digest.hexdigest()


def test_parts_past_the_count_are_413(pacs: RunningServer) -> None:
    body = error(stow(pacs, multipart([small(n) for n in range(1, 5)])))
    assert "more than 3 parts ([web] stow_max_parts)" in body["message"]
    assert "stored before it: 3 instances" in body["message"]
    assert index_counts(pacs.database_url)["instance"] == 3
    assert stow(pacs, multipart([small(n) for n in range(5, 8)])).status_code == 200


def test_a_part_past_the_part_limit_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text("[web]\nstow_max_part_bytes = 1048576\n")
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    try:
        _, head = header(2, frames=1, side=1100)  # 1.15 MiB of pixel data
        message = error(stow(srv, Body(head, 1100 * 1100)))["message"]
        assert "a part is larger than 1048576 bytes ([web] stow_max_part_bytes)" in message
        assert "stored before" not in message
        assert index_counts(srv.database_url)["instance"] == 0
        assert blob_files(srv.data) == []
        assert tmp_files(srv.data) == []
        # One just within the limit is stored.
        _, head = header(3, frames=1, side=1000)
        assert stow(srv, Body(head, 1000 * 1000)).status_code == 200
        assert index_counts(srv.database_url)["instance"] == 1
    finally:
        srv.kill()
