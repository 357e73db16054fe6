"""Archive.receive: an instance streamed a piece at a time into the file that becomes its
blob, with memory that does not grow with its size, no file left when it is abandoned or
refused, and its blob visible only once it is stored."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from pypacs.archive import Archive
from pypacs.archive.receive import Receiving
from pypacs.errors import InvalidInstance, OutOfResources
from pypacs.index.writes import Outcome
from pypacs.store import open_store

from dicomgen import Spec, dataset_bytes, make_dataset, write

CHUNK = 64 * 1024


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def blobs(archive: Archive) -> list[Path]:
    return files_under(Path(archive.options.blob_root))


def peak_rss() -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


def header_and_pixels(tmp_path: Path, spec: Spec, pixel_bytes: int) -> tuple[bytes, bytes]:
    """A data set's bytes up to its pixel data, and the pixel data element's header for
    ``pixel_bytes`` of value (explicit VR little endian, OW: PS3.5 7.1.2)."""
    body = dataset_bytes(write(spec, tmp_path))
    cut = body.index(b"\xe0\x7f\x10\x00OW")
    return body[:cut], b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)


def start(archive: Archive, spec: Spec) -> Receiving:
    ds = make_dataset(spec)
    return archive.receive(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)


def test_small_instance_stored_as_received(archive: Archive, tmp_path: Path) -> None:
    spec = Spec("P1", "Doe^John", 1, 1, 1, rows=64)
    body = dataset_bytes(write(spec, tmp_path))
    ds = make_dataset(spec)
    with start(archive, spec) as receiving:
        for at in range(0, len(body), 1000):
            receiving.write(memoryview(body)[at : at + 1000])
        result = receiving.finish(
            expected_sop_class=ds.SOPClassUID, expected_sop_instance=ds.SOPInstanceUID
        )
    assert result.outcome is Outcome.STORED
    assert result.sop_instance_uid == ds.SOPInstanceUID
    assert result.study_instance_uid == ds.StudyInstanceUID
    (blob,) = blobs(archive)
    assert blob.read_bytes().endswith(body)  # bytes in are bytes out, behind pypacs' meta
    assert blob.read_bytes()[128:132] == b"DICM"
    again = start(archive, spec)
    again.write(body)
    assert again.finish().outcome is Outcome.DUPLICATE
    assert len(blobs(archive)) == 1


def test_200_mib_streamed_in_bounded_memory(archive: Archive, tmp_path: Path) -> None:
    spec = Spec("P2", "Big^Image", 1, 1, 1)
    size = 200 * 1024 * 1024
    head, pixel_header = header_and_pixels(tmp_path, spec, size)
    piece = bytes(CHUNK)
    before = peak_rss()
    with start(archive, spec) as receiving:
        receiving.write(head + pixel_header)
        for _ in range(size // CHUNK):
            receiving.write(piece)
        result = receiving.finish()
    grown = peak_rss() - before
    assert result.outcome is Outcome.STORED
    (blob,) = blobs(archive)
    assert blob.stat().st_size == receiving.size > size
    assert grown < 30 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_abandoned_leaves_no_file(archive: Archive, tmp_path: Path) -> None:
    small = Spec("P3", "Gone^Away", 1, 1, 1)
    with start(archive, small) as receiving:
        receiving.write(dataset_bytes(write(small, tmp_path))[:100])
        assert blobs(archive) == []  # a small instance is held in memory until it is whole
    assert blobs(archive) == []
    large = Spec("P3", "Gone^Away", 1, 1, 2, rows=512)  # 512 KiB of pixels: to its file
    body = dataset_bytes(write(large, tmp_path))
    with start(archive, large) as receiving:
        receiving.write(body)
        assert receiving.size > len(body)  # written to its file, which has no name yet
        assert blobs(archive) == []
    assert blobs(archive) == []


def test_blob_visible_only_once_stored(archive: Archive, tmp_path: Path) -> None:
    spec = Spec("P4", "Safe^Crash", 1, 1, 1, rows=512)  # large enough to go to its file
    body = dataset_bytes(write(spec, tmp_path))
    receiving = start(archive, spec)
    receiving.write(body)
    # A crash now leaves nothing: the file being written has no name until it is stored
    # (store/filesystem.py); neither this process's scan nor a new one's finds a blob.
    assert [key for _, keys in archive.store.scan() for key in keys] == []
    assert blobs(archive) == []
    restarted = open_store(archive.options.blob_root)
    assert [key for _, keys in restarted.scan() for key in keys] == []
    receiving.abandon()
    receiving = start(archive, spec)
    receiving.write(body)
    receiving.finish()
    assert len([key for _, keys in archive.store.scan() for key in keys]) == 1


def test_invalid_instance_refused_and_removed(archive: Archive, tmp_path: Path) -> None:
    spec = Spec("P5", "Bad^Data", 1, 1, 1)
    body = dataset_bytes(write(spec, tmp_path))
    with start(archive, spec) as receiving:
        receiving.write(body[: len(body) - 7])  # cut short inside the pixel data
        with pytest.raises(InvalidInstance) as refused:
            receiving.finish()
    assert refused.value.kind == "unparsable"
    with start(archive, spec) as receiving:
        receiving.write(body)
        with pytest.raises(InvalidInstance) as mismatch:
            receiving.finish(expected_sop_instance="1.2.3")
    assert mismatch.value.kind == "mismatch"
    assert blobs(archive) == []


def test_past_max_instance_bytes_refused_and_removed(archive: Archive, tmp_path: Path) -> None:
    archive.options = replace(archive.options, max_instance_bytes=100_000)
    spec = Spec("P6", "Too^Large", 1, 1, 1)
    head, pixel_header = header_and_pixels(tmp_path, spec, 200_000)
    with start(archive, spec) as receiving:
        receiving.write(head + pixel_header)
        with pytest.raises(OutOfResources, match="max_instance_bytes"):
            for _ in range(4):
                receiving.write(bytes(CHUNK))
        assert blobs(archive) == []
        with pytest.raises(OutOfResources):  # the rest of the data set is refused too
            receiving.write(bytes(10))
    assert blobs(archive) == []
    # Within the bound: stored.
    body = dataset_bytes(write(spec, tmp_path))
    with start(archive, spec) as receiving:
        receiving.write(body)
        assert receiving.finish().outcome is Outcome.STORED
