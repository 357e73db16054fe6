"""Awkward instances of the kind real devices send, made here: multi-frame compressed pixel
data with wrong or missing offset tables, several fragments per frame, odd-length frames,
and non-conforming UIDs; beside them real files from the libraries' own test sets."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom import uid as ts
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import itemize_frame
from pydicom.filereader import read_file_meta_info

from dicomgen import dataset_bytes, uid, write_part10

MULTIFRAME_GRAY = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte SC Image Storage
# GDCM's example of a real device's file (Debian's libgdcm3.0, which libgdcm-tools brings):
# 4-frame JPEG Lossless whose Basic Offset Table is wrong, UIDs with leading zeros.
GDCM_EXAMPLE = Path("/usr/share/doc/libgdcm3.0/examples/00191113.dcm")


@dataclass(frozen=True)
class Awkward:
    name: str
    path: Path
    frames: int
    # The decoded frames, known independently of pypacs (None: not decodable here).
    truth: np.ndarray | None


def jpeg_frames(count: int, rows: int, cols: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """``count`` 8-bit grayscale JPEG baseline frames, each different, and their pixels as
    Pillow decodes them."""
    rng = np.random.default_rng(seed)
    encoded, decoded = [], []
    for n in range(count):
        ramp = np.add.outer(np.arange(rows), np.arange(cols)) * (n + 1) % 256
        pixels = (ramp + rng.integers(0, 8, (rows, cols))).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        encoded.append(out.getvalue())
        decoded.append(np.asarray(Image.open(io.BytesIO(out.getvalue()))))
    return encoded, np.stack(decoded)


def encapsulated(fragments_per_frame: list[list[bytes]], offsets: list[int] | None) -> bytes:
    """PS3.5 A.4 encapsulation with exactly the offset table given (None: empty)."""
    table = b"".join(o.to_bytes(4, "little") for o in offsets or [])
    out = bytearray(b"\xfe\xff\x00\xe0" + len(table).to_bytes(4, "little") + table)
    for fragments in fragments_per_frame:
        for fragment in fragments:
            out += b"".join(itemize_frame(fragment, nr_fragments=1))
    return bytes(out)


def true_offsets(fragments_per_frame: list[list[bytes]]) -> list[int]:
    offsets, position = [], 0
    for fragments in fragments_per_frame:
        offsets.append(position)
        position += sum(8 + len(f) + len(f) % 2 for f in fragments)
    return offsets


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` fragments, all of even length but the last (PS3.5 A.4: items
    are even; a pad byte inside a frame would corrupt it)."""
    step = -(-len(data) // parts)
    step += step % 2
    return [data[i : i + step] for i in range(0, len(data), step)]


def jpeg_dataset(number: int, pixel_data: bytes, frames: int, rows: int, cols: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_GRAY
    ds.SOPInstanceUID = uid("7700", 1, 1, number)
    ds.StudyInstanceUID = uid("7700", 1)
    ds.SeriesInstanceUID = uid("7700", 1, 1)
    ds.PatientID = "AWKWARD"
    ds.PatientName = "Awkward^Frames"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.LossyImageCompression = "01"
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts.JPEGBaseline8Bit
    return ds


def write(ds: Dataset, folder: Path, name: str) -> Path:
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def made(folder: Path) -> list[Awkward]:
    """Multi-frame JPEG instances whose frames only careful splitting finds."""
    rows, cols, frames = 24, 20, 4
    encoded, truth = jpeg_frames(frames, rows, cols, seed=7)
    one_each = [[f] for f in encoded]
    several = [split(f, 3) for f in encoded]  # three fragments per frame
    right = true_offsets(one_each)
    flat = [fragment for frame in several for fragment in frame]
    cases = {
        # Off by one byte each and one entry too many, as GDCM's example has.
        "bot-wrong": (one_each, [o + 1 for o in right] + [right[-1] + 999]),
        "fragments-no-bot": (several, None),
        "fragments-bot-wrong": (several, [0, 17, 33, 50]),
        "fragments-bot-right": (several, true_offsets(several)),
        # Offsets that fall where items begin, but of the first four fragments: only the
        # frames' opening markers tell them wrong.
        "fragments-bot-aligned-wrong": (several, true_offsets([[f] for f in flat])[:4]),
    }
    out = []
    for number, (name, (fragments, offsets)) in enumerate(cases.items(), 1):
        ds = jpeg_dataset(number, encapsulated(fragments, offsets), frames, rows, cols)
        out.append(Awkward(name, write(ds, folder, name), frames, truth))
    return out


def unsplittable(folder: Path) -> Path:
    """Number of Frames says 3; the data holds 2 JPEG frames: nothing can send 3 whole."""
    encoded, _ = jpeg_frames(2, 16, 16, seed=3)
    ds = jpeg_dataset(99, encapsulated([[f] for f in encoded], None), 3, 16, 16)
    ds.StudyInstanceUID = uid("7700", 2)
    ds.SeriesInstanceUID = uid("7700", 2, 1)
    return write(ds, folder, "unsplittable")


def library_files(folder: Path) -> list[tuple[str, Path]]:
    """Real files: GDCM's example and pydicom's 12-bit JPEG, big endian, multi-frame RLE and
    JPEG 2000 (from pydicom-data), JPEG-LS, JPEG lossless RGB. pydicom keeps one image in
    several syntaxes under the same UIDs: a copy after the first gets UIDs of its own (the
    pixel data untouched)."""
    names = [
        "JPEG-lossy.dcm",  # 12-bit JPEG Extended (process 4)
        "MR_small_bigendian.dcm",
        "SC_rgb_rle_2frame.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "CT_small.dcm",
    ]
    found: list[tuple[str, Path]] = [("gdcm-00191113", gdcm_example(folder))]
    seen: set[str] = set()
    for n, name in enumerate(names):
        path = Path(str(get_testdata_file(name)))
        ds = dcmread(path)
        if ds.SOPInstanceUID in seen:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ts.UID(uid("7701", n))
            ds.SeriesInstanceUID = uid("7701", n, 1)
            path = folder / name
            ds.save_as(path, enforce_file_format=True)
        seen.add(ds.SOPInstanceUID)
        found.append((name, path))
    return found


def gdcm_example(folder: Path) -> Path:
    """GDCM's example with its file meta made to name its data set's SOP Instance UID (it
    names another, which a C-STORE request would then carry); the data set is untouched."""
    meta = read_file_meta_info(GDCM_EXAMPLE)
    body = GDCM_EXAMPLE.read_bytes()
    ds = dcmread(GDCM_EXAMPLE, stop_before_pixels=True)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    offset = len(body) - len(dataset_bytes(GDCM_EXAMPLE))
    return write_part10(folder / GDCM_EXAMPLE.name, meta, body[offset:])


def number_of_frames(path: Path) -> int:
    return int(dcmread(path, stop_before_pixels=True).get("NumberOfFrames") or 1)
