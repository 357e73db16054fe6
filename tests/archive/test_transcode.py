"""Transcoding a stored instance for a peer that does not accept its transfer syntax.

The stored inputs come from DCMTK (dcmcjpeg, dcmcjpls, dcmcrle, dcmconv) where it can make
them, and from pydicom's own encoder for JPEG 2000.
"""

from __future__ import annotations

import io
import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

from pypacs.archive.transcode import choose_syntax, transcode
from pypacs.errors import TranscodeError

from dicomgen import Spec, dataset_bytes, make_dataset, write

ELE, ILE, BE = ts.ExplicitVRLittleEndian, ts.ImplicitVRLittleEndian, ts.ExplicitVRBigEndian
DEFLATED, RLE, J2K = ts.DeflatedExplicitVRLittleEndian, ts.RLELossless, ts.JPEG2000Lossless

KINDS = {  # kind: (Samples per Pixel, Photometric Interpretation, bits allocated / stored, signed)
    "mono16": (1, "MONOCHROME2", 16, 12, 0),
    "signed16": (1, "MONOCHROME2", 16, 12, 1),
    "mono8": (1, "MONOCHROME2", 8, 8, 0),
    "rgb8": (3, "RGB", 8, 8, 0),
    "mono32": (1, "MONOCHROME2", 32, 24, 0),
}


def image(kind: str, frames: int = 1) -> tuple[Dataset, NDArray[np.generic]]:
    """A 32 x 40 image (JPEG 2000 needs 32 x 32 at least): a gradient with noise."""
    spp, photometric, allocated, stored, signed = KINDS[kind]
    ds = make_dataset(Spec("P1", "Doe^Jane", 1, 1, 1))
    ds.Rows, ds.Columns = 32, 40
    ds.SamplesPerPixel, ds.PhotometricInterpretation = spp, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = signed
    if spp == 3:
        ds.PlanarConfiguration = 0
    y, x = np.mgrid[0:32, 0:40]
    ramp = np.stack([x * 24, y * 30, (x + y) * 13], -1) if spp == 3 else x * 16 + y * 10
    low, high = (
        (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    )
    ramp = ramp * (high - low) // 1000 + low  # below 1000: a gradient over most of the range
    noise = np.random.default_rng(7).integers(0, 4, (frames, *ramp.shape))
    steps = np.arange(frames).reshape(-1, *[1] * ramp.ndim)  # every frame different
    arr = np.clip(ramp + noise + steps, low, high).astype(f"{'iu'[signed == 0]}{allocated // 8}")
    if frames > 1:
        ds.NumberOfFrames = frames
    else:
        arr = arr[0]
    ds.PixelData = arr.tobytes()
    if allocated == 16:  # VRs "US or SS" and "US or OW" (PS3.5 6.2.2), some in a nested item
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(arr.min()), int(arr.max())
        lut = Dataset()
        lut.LUTDescriptor = [4, low, 16]
        lut.LUTData = np.array([0, 1000, 2000, 4095], "<u2").tobytes()  # OW, as pydicom writes it
        ds.VOILUTSequence = [lut]
    return ds, arr


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    make: str | tuple[str, ...]  # a pydicom encoder's syntax, or a DCMTK command
    tolerance: int = 0  # the largest pixel difference expected; 0 for lossless
    frames: int = 1
    refused: tuple[tuple[str, str], ...] = ()  # (target, reason) pydicom's encoders refuse


CASES = [
    Case("j2k-lossless", "signed16", ts.JPEG2000Lossless),
    Case("j2k-lossless-rgb", "rgb8", ts.JPEG2000Lossless),
    Case("j2k-lossy", "mono16", ts.JPEG2000, tolerance=160),
    Case("jpegls-lossless", "signed16", ("dcmcjpls", "+el")),
    Case("jpeg-lossless-sv1", "mono16", ("dcmcjpeg", "+e1")),
    Case("jpeg-lossless-sv1-signed", "signed16", ("dcmcjpeg", "+e1")),
    Case("jpeg-baseline", "mono8", ("dcmcjpeg", "+eb"), tolerance=10),
    Case("jpeg-baseline-rgb", "rgb8", ("dcmcjpeg", "+eb"), tolerance=12),
    Case("jpeg-extended", "mono16", ("dcmcjpeg", "+ee"), tolerance=24),
    Case("rle", "signed16", ("dcmcrle",)),
    Case("rle-rgb", "rgb8", ("dcmcrle",)),
    Case("deflated", "mono16", ("dcmconv", "+td")),
    Case("implicit", "mono16", ("dcmconv", "+ti")),
    Case("explicit", "mono16", ("dcmconv", "+te")),
    Case("big-endian", "signed16", ("dcmconv", "+tb")),
    Case("big-endian-rgb", "rgb8", ("dcmconv", "+tb")),
    Case(  # OW words swapped as DCMTK does; pydicom's own decoder reads them as 32-bit values
        "big-endian-32bit",
        "mono32",
        ("dcmconv", "+tb"),
        refused=((RLE, "Bits Allocated: 32"),),  # PS3.5 Table 8.2.2-1: 8 or 16
    ),
    Case("rle-3-frames", "mono16", ("dcmcrle",), frames=3),
    Case("j2k-lossless-3-frames", "rgb8", ts.JPEG2000Lossless, frames=3),
]
CASE = {case.name: case for case in CASES}
TARGETS = [ELE, ILE, DEFLATED, RLE, J2K]
# May differ after decoding lossy JPEG (YCbCr to RGB); everything else must not change.
PIXEL_DESCRIPTION = {0x00280004, 0x00280006, 0x7FE00010}
EXTENDED_OFFSETS = {0x7FE00001, 0x7FE00002}  # PS3.5 A.4: only beside encapsulated pixel data


def make_stored(case: Case, folder: Path) -> Path:
    ds, _ = image(case.kind, case.frames)
    out = folder / f"{case.name}.dcm"
    if isinstance(case.make, str):
        cr = [10.0] if case.tolerance else None
        ds.compress(case.make, j2k_cr=cr, encapsulate_ext=case.frames > 1)
        ds.save_as(out, enforce_file_format=True)
        return out
    source = folder / f"{case.name}.in.dcm"
    ds.save_as(source, enforce_file_format=True)
    subprocess.run([*case.make, str(source), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Path]:
    folder = tmp_path_factory.mktemp("transcode")
    return cache(lambda case: make_stored(case, folder))


def encode(ds: Dataset, folder: Path) -> Dataset:
    """Write `ds` with pydicom, check the bytes really are in its syntax, read it back."""
    syntax = ds.file_meta.TransferSyntaxUID
    # pynetdicom's send_c_store sends in the original encoding when it differs from the syntax.
    assert ds.original_encoding == (syntax.is_implicit_VR, syntax.is_little_endian)
    path = folder / "sent.dcm"
    ds.save_as(path, enforce_file_format=True)
    body = dataset_bytes(path)
    if syntax.is_deflated:
        body = zlib.decompress(body, -zlib.MAX_WBITS)
    assert body[4:6].isalpha() is not syntax.is_implicit_VR  # a VR follows the first tag?
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    if "PixelData" in back:
        assert back["PixelData"].is_undefined_length is syntax.is_compressed  # PS3.5 A.4
    return back


def attributes_of(path: Path, folder: Path) -> Dataset:
    """The stored attributes; big endian ones as DCMTK turns them little endian, since pydicom
    keeps OW values (here LUT Data) as the bytes it read."""
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID != BE:
        return ds
    subprocess.run(["dcmconv", "+te", path, folder / "little.dcm"], check=True)
    return dcmread(folder / "little.dcm")


LOSSY_IMAGE_COMPRESSION = 0x00282110


def assert_same_attributes(stored: Dataset, back: Dataset, *, lossy: bool) -> None:
    skip = PIXEL_DESCRIPTION | EXTENDED_OFFSETS
    if lossy:
        # PS3.3 C.7.6.1.1.5: data once lossy compressed says so, also when decompressed.
        assert back.LossyImageCompression == "01"
        skip = skip | {LOSSY_IMAGE_COMPRESSION}
    assert {e.tag for e in back} - skip == {e.tag for e in stored} - skip
    for elem in stored:
        if elem.tag not in skip:
            assert back[elem.tag].value == elem.value, elem.keyword


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: ts.UID(t).keyword)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_transcode(case: Case, target: str, stored: Callable[[Case], Path], tmp_path: Path) -> None:
    path = stored(case)
    if reason := dict(case.refused).get(target):
        with pytest.raises(TranscodeError, match=f"cannot encode the pixel data as .*{reason}"):
            transcode(path.read_bytes(), target)
        return
    result = transcode(path.read_bytes(), target)
    assert result.file_meta.TransferSyntaxUID == target
    back = encode(result, tmp_path)
    as_stored = attributes_of(path, tmp_path)
    assert_same_attributes(as_stored, back, lossy=case.tolerance > 0)
    kept = dcmread(path).file_meta.TransferSyntaxUID == target
    offsets = set(back.keys()) & EXTENDED_OFFSETS
    assert offsets == (set(as_stored.keys()) & EXTENDED_OFFSETS if kept else set())
    _, original = image(case.kind, case.frames)
    assert back.PhotometricInterpretation == KINDS[case.kind][1]
    assert back.get("NumberOfFrames", 1) == case.frames
    pixels = back.pixel_array
    assert pixels.dtype == original.dtype
    assert pixels.shape == original.shape
    difference = np.abs(pixels.astype(np.int64) - original.astype(np.int64))
    assert difference.max() <= case.tolerance
    if case.tolerance:
        assert difference.max() > 0  # the input really was lossy


@pytest.mark.parametrize(
    ("form", "case"),
    [("bytes", CASE["j2k-lossless"]), ("memoryview", CASE["big-endian"]), ("file", CASE["rle"])],
)
def test_stored_bytes_are_only_read(
    form: str, case: Case, stored: Callable[[Case], Path], tmp_path: Path
) -> None:
    path = stored(case)
    buffer = bytearray(path.read_bytes())
    before = bytes(buffer)
    with path.open("rb") as fp:
        data: bytes | memoryview | BinaryIO = fp
        if form != "file":
            data = memoryview(buffer) if form == "memoryview" else bytes(buffer)
        result = transcode(data, ILE)
    assert bytes(buffer) == before
    assert path.read_bytes() == before
    assert np.array_equal(encode(result, tmp_path).pixel_array, image(case.kind)[1])


MPEG2 = "1.2.840.10008.1.2.4.100"


@pytest.mark.parametrize(
    ("stored_syntax", "accepted", "expected"),
    [
        (J2K, [ELE, J2K], "stored"),
        (ts.JPEGBaseline8Bit, [ts.JPEGBaseline8Bit], "stored"),
        (MPEG2, [ELE, MPEG2], "stored"),
        (J2K, [ELE], ELE),
        (ts.JPEGLSLossless, [ILE, ELE], ELE),  # our preference, not the peer's order
        (ts.JPEGBaseline8Bit, [ts.JPEGExtended12Bit, ILE], ILE),  # lossy store, decoded
        (BE, [DEFLATED], DEFLATED),
        (ELE, [J2K, RLE], RLE),
        (ELE, [J2K], J2K),
        (ELE, [ts.JPEGLSLossless], None),  # no encoder here
        (ELE, [ts.JPEGBaseline8Bit, ts.JPEG2000], None),  # lossy
        (RLE, [ts.JPEGLSNearLossless], None),
        (ts.JPEGBaseline8Bit, [ts.JPEGExtended12Bit], None),  # lossy again
        (ELE, [BE], None),  # never written
        (MPEG2, [ELE], None),  # no decoder
        ("1.2.3.4", [ELE], None),
        (ELE, [], None),
    ],
)
def test_choose_syntax(stored_syntax: str, accepted: list[str], expected: str | None) -> None:
    want = stored_syntax if expected == "stored" else expected
    assert choose_syntax(stored_syntax, accepted) == want


def damaged(path: Path, damage: Callable[[bytes], bytes]) -> bytes:
    ds = dcmread(path)
    ds.PixelData = encapsulate([damage(next(generate_frames(ds.PixelData, number_of_frames=1)))])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "damage", "message"),
    [
        (CASE["j2k-lossless"], lambda f: f[: len(f) // 2], "failed to decode image"),
        (CASE["j2k-lossless"], lambda f: f[:8] + bytes(len(f) - 8), "failed to read the header"),
        (CASE["jpeg-baseline"], lambda f: bytes(len(f)), "SOI marker missing"),
        (CASE["rle"], lambda f: f[: len(f) // 4], "doesn't match the expected amount"),
    ],
    ids=["j2k-truncated", "j2k-zeroed", "jpeg-zeroed", "rle-truncated"],
)
def test_damaged_pixel_data(
    case: Case, damage: Callable[[bytes], bytes], message: str, stored: Callable[[Case], Path]
) -> None:
    data = damaged(stored(case), damage)
    with pytest.raises(
        TranscodeError, match=f"cannot decode the .* pixel data: .*{message}"
    ) as info:
        transcode(data, ELE)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_no_lossy_target(stored: Callable[[Case], Path]) -> None:
    data = stored(CASE["explicit"]).read_bytes()
    for target in (ts.JPEGBaseline8Bit, ts.JPEG2000, ts.JPEGLSLossless, BE):
        with pytest.raises(
            TranscodeError, match=re.escape(f"cannot produce {ts.UID(target).name}: ")
        ):
            transcode(data, target)


def test_too_small_for_jpeg2000(tmp_path: Path) -> None:
    spec = Spec("P1", "Doe^Jane", 1, 1, 1)  # 8 x 8
    data = write(spec, tmp_path).read_bytes()
    with pytest.raises(
        TranscodeError, match="needs at least 32 rows and columns, the image is 8 x 8"
    ):
        transcode(data, J2K)
    assert np.array_equal(transcode(data, RLE).pixel_array, make_dataset(spec).pixel_array)


def test_decoded_size_must_match_the_attributes(tmp_path: Path) -> None:
    ds, _ = image("mono8")
    ds.compress(J2K)
    ds.BitsAllocated = 16  # the 8-bit codestream decodes to half the bytes this announces
    path = tmp_path / "wrong.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(
        TranscodeError,
        match=r"decoded to 1 frame\(s\) and 1280 bytes .* say 1 frame\(s\) and 2560 bytes",
    ):
        transcode(path.read_bytes(), ELE)


def test_no_pixel_data(tmp_path: Path) -> None:
    ds = make_dataset(Spec("P1", "Doe^Jane", 1, 1, 1), J2K)
    del ds.PixelData
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = encode(transcode(path.read_bytes(), ILE), tmp_path)
    assert "PixelData" not in back
    assert_same_attributes(ds, back, lossy=False)


def test_not_dicom() -> None:
    with pytest.raises(TranscodeError, match="does not parse"):
        transcode(b"\0" * 128 + b"DIC" + b"\xff" * 64, ELE)
