"""The fixture set of the WADO tests, a server holding it, and readers of the answers.

Study 1 holds four series, stored in this order:

1. ``ct``: three 16 x 16 CT slices (stored 12 of 16 bits, Rescale Slope 2, Intercept
   -1024): slice 1 carries a window (40/400), slice 2 none, slice 3 is MONOCHROME1 with a
   sigmoid window.
2. ``syntaxes``: the same 32 x 40 gradient stored in eight transfer syntaxes (made by DCMTK
   and pydicom), plus an 8-bit one as lossy JPEG baseline.
3. ``frames``: a 3-frame image uncompressed and the same as RLE, an RGB image, a 300 x 200
   image (for thumbnails), and one with a private OB element of 2000 bytes.
4. ``sr``: a Basic Text SR (no pixel data).

Study 2 holds an instance claiming MPEG-2 (not decodable: pydicom has no MPEG decoder),
imported from disk since no C-STORE context carries MPEG-2, and one ordinary instance.
Expected answers are computed from these definitions and the files, never read back from
pypacs.
"""

from __future__ import annotations

import email.message
import io
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import BasicTextSRStorage, SecondaryCaptureImageStorage

from dicomgen import Spec, make_dataset, uid, write_dataset
from helpers import blob_path, index_rows, status_of, store_files
from serving import RunningServer, start_pypacs

ROOT = 9101  # first UID component of this set, apart from other tests' data
STUDY = uid(ROOT, 1)
STUDY2 = uid(ROOT, 2)
ELE, ILE = ts.ExplicitVRLittleEndian, ts.ImplicitVRLittleEndian
Pixels = NDArray[np.generic]


def series_uid(number: int, study: int = 1) -> str:
    return uid(ROOT, study, number)


@dataclass
class Item:
    """One stored instance: where its file is, what it is, the pixels it was made from."""

    label: str
    path: Path
    study: str
    series: str
    sop: str
    syntax: str
    pixels: Pixels | None = None
    frames: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def _base(study: int, series: int, number: int, modality: str = "CT") -> Dataset:
    ds = make_dataset(Spec("WADO-1", "Wado^Test", study, series, number, modality=modality))
    ds.StudyInstanceUID = uid(ROOT, study)
    ds.SeriesInstanceUID = series_uid(series, study)
    ds.SOPInstanceUID = uid(ROOT, study, series, number)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = f"series {series}"
    # Sequences at the study and series levels, the same in every instance.
    ds.ProcedureCodeSequence = [_code("P1", "first {procedure}"), _code("P2", "second")]
    request = Dataset()
    request.RequestedProcedureID = f"RP{series}"
    request.ScheduledProtocolCodeSequence = [_code("S1", 'protocol "one"')]
    ds.RequestAttributesSequence = [request]
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99WADO", meaning
    return item


def _set_pixels(ds: Dataset, arr: Pixels, photometric: str, bits_stored: int) -> None:
    frames = arr.shape[0] if arr.ndim == 4 or (arr.ndim == 3 and photometric != "RGB") else 1
    spp = 3 if photometric == "RGB" else 1
    ds.Rows, ds.Columns = arr.shape[-3:-1] if spp == 3 else arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = spp, photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if spp == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def ct_slice(number: int) -> tuple[Dataset, Pixels]:
    ds = _base(1, 1, number)
    arr = (np.arange(256, dtype=np.uint16).reshape(16, 16) * (7 * number + 3)) % 4096
    _set_pixels(ds, arr, "MONOCHROME2", 12)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    if number == 1:
        ds.WindowCenter, ds.WindowWidth = 40, 400
        # Text that looks like DICOM JSON, nested sequences, and a Latin-1 value.
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageComments = 'Größe {"00100010":{"vr":"PN"}} [1]'
        reference = Dataset()
        reference.ReferencedSOPClassUID = ds.SOPClassUID
        reference.ReferencedSOPInstanceUID = uid(ROOT, 1, 1, 2)
        reference.PurposeOfReferenceCodeSequence = [_code("R1", '"00080018":{"vr":"UI"} }')]
        ds.ReferencedImageSequence = [reference]
    if number == 3:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1000, 3000, "SIGMOID"
    return ds, arr


def gradient(rows: int = 32, columns: int = 40, frames: int = 1, bits: int = 12) -> Pixels:
    y, x = np.mgrid[0:rows, 0:columns]
    top = (1 << bits) - 1
    arr = np.stack([(x * 97 + y * 61 + f * 331) % top for f in range(frames)])
    dtype = np.uint8 if bits <= 8 else np.uint16
    return arr.astype(dtype) if frames > 1 else arr[0].astype(dtype)


# Label, how the stored file is made from an Explicit VR Little Endian one.
SYNTAX_CASES: tuple[tuple[str, str | tuple[str, ...]], ...] = (
    ("explicit", ()),
    ("implicit", ("dcmconv", "+ti")),
    ("deflated", ("dcmconv", "+td")),
    ("big-endian", ("dcmconv", "+tb")),
    ("rle", ("dcmcrle",)),
    ("jpeg-ls", ("dcmcjpls", "+el")),
    ("jpeg-lossless", ("dcmcjpeg", "+e1")),
    ("j2k", ts.JPEG2000Lossless),
)


def _converted(ds: Dataset, make: str | tuple[str, ...], folder: Path, label: str) -> Path:
    if isinstance(make, str):
        ds.compress(make, generate_instance_uid=False)
        return write_dataset(ds, folder)
    source = write_dataset(ds, folder)
    if not make:
        return source
    out = folder / f"{label}.dcm"
    subprocess.run([*make, str(source), str(out)], check=True, capture_output=True)
    source.unlink()
    return out


def _item(label: str, path: Path, pixels: Pixels | None, **extra: object) -> Item:
    ds = dcmread(path, stop_before_pixels=True)
    return Item(
        label,
        path,
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        pixels,
        int(ds.get("NumberOfFrames") or 1),
        dict(extra),
    )


def build(folder: Path) -> tuple[list[Item], Item]:
    """The stored items of both studies in storing order, and the MPEG-2 one (imported)."""
    items: list[Item] = []
    for number in (1, 2, 3):
        ds, arr = ct_slice(number)
        items.append(_item(f"ct{number}", write_dataset(ds, folder), arr))
    arr = gradient()
    for number, (label, make) in enumerate(SYNTAX_CASES, start=1):
        ds = _base(1, 2, number)
        _set_pixels(ds, arr, "MONOCHROME2", 12)
        items.append(_item(label, _converted(ds, make, folder, label), arr))
    ds = _base(1, 2, len(SYNTAX_CASES) + 1)
    _set_pixels(ds, gradient(bits=8), "MONOCHROME2", 8)
    items.append(_item("jpeg-baseline", _converted(ds, ("dcmcjpeg", "+eb"), folder, "jb"), None))
    items.extend(_frames_series(folder))
    ds = _base(1, 4, 1, modality="SR")
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    items.append(_item("sr", write_dataset(ds, folder), None))
    ds = _base(2, 2, 1)
    items.append(_item("plain", write_dataset(ds, folder), None))
    return items, _video(folder)


def _frames_series(folder: Path) -> list[Item]:
    made: list[Item] = []
    arr = gradient(frames=3)
    for number, make in ((1, ()), (2, ("dcmcrle",))):
        ds = _base(1, 3, number)
        _set_pixels(ds, arr, "MONOCHROME2", 12)
        label = "multiframe" if number == 1 else "multiframe-rle"
        made.append(_item(label, _converted(ds, make, folder, label), arr))
    ds = _base(1, 3, 3)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    y, x = np.mgrid[0:12, 0:20]
    rgb = np.stack([x * 12, y * 20, (x + y) * 8], -1).astype(np.uint8)
    _set_pixels(ds, rgb, "RGB", 8)
    made.append(_item("rgb", write_dataset(ds, folder), rgb))
    ds = _base(1, 3, 4)
    big = gradient(rows=200, columns=300)
    _set_pixels(ds, big, "MONOCHROME2", 12)
    made.append(_item("large", write_dataset(ds, folder), big))
    ds = _base(1, 3, 5)
    block = ds.private_block(0x0029, "PYPACS WADO TEST", create=True)
    private = bytes(range(256)) * 8
    block.add_new(0x10, "OB", private)
    made.append(_item("private", write_dataset(ds, folder), None, private=private))
    return made


def _video(folder: Path) -> Item:
    ds = _base(2, 1, 1)
    ds.file_meta.TransferSyntaxUID = ts.MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation, ds.BitsStored, ds.HighBit, ds.BitsAllocated = (
        "YBR_PARTIAL_420",
        8,
        7,
        8,
    )
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    return _item("video", write_dataset(ds, folder), None)


@dataclass
class Archive:
    """The server and what it holds."""

    server: RunningServer
    items: list[Item]
    video: Item

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/dicom-web"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def __getitem__(self, label: str) -> Item:
        return next(i for i in [*self.items, self.video] if i.label == label)

    def in_study(self, study: str) -> list[Item]:
        """Stored order: series by first arrival, then arrival (the video came first)."""
        held = [i for i in [self.video, *self.items] if i.study == study]
        series = list(dict.fromkeys(i.series for i in held))
        return sorted(held, key=lambda i: series.index(i.series))

    def in_series(self, series: str) -> list[Item]:
        return [i for i in self.items if i.series == series]

    def url(self, item: Item) -> str:
        return f"{self.dicomweb}/studies/{item.study}/series/{item.series}/instances/{item.sop}"

    def blob(self, item: Item) -> bytes:
        """The file pypacs keeps for the item: its data set as sent, behind file meta."""
        rows = index_rows(self.server.database_url, "instance")
        (key,) = [r["blob_key"] for r in rows if r["sop_instance_uid"] == item.sop]
        return blob_path(self.server.data, key).read_bytes()


def data_set(part10: bytes) -> bytes:
    """The bytes of a Part 10 file after its file meta information."""
    stream = io.BytesIO(part10)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    return stream.read()


def serve(folder: Path) -> Archive:
    """Make the set, import the MPEG-2 instance, start pypacs, C-STORE the rest in order."""
    items, video = build(folder)
    data = folder / "data"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pypacs",
            "import",
            "--data",
            str(data),
            "--no-progress",
            str(video.path),
        ],
        check=True,
        capture_output=True,
    )
    server = start_pypacs(data)
    try:
        statuses = store_files(server.dicom_port, [i.path for i in items])
        refused = {p.name: status_of(s) for p, s in statuses.items() if status_of(s) != "0x0000"}
        assert not refused, refused
    except BaseException:
        server.kill()
        raise
    return Archive(server, items, video)


# -- reading answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    headers: email.message.Message
    body: bytes

    @property
    def content_type(self) -> str:
        return str(self.headers["Content-Type"])


def parts(response: httpx.Response) -> list[Part]:
    """The parts of a multipart/related answer (RFC 2046 5.1), checked for shape."""
    header = email.message.Message()
    header["Content-Type"] = response.headers["content-type"]
    assert header.get_content_type() == "multipart/related", response.headers["content-type"]
    boundary = header.get_param("boundary")
    assert isinstance(boundary, str)
    delimiter = b"--" + boundary.encode()
    pieces = response.content.split(delimiter)
    assert pieces[0] == b"" and pieces[-1] == b"--\r\n", "not delimited as RFC 2046 says"
    found = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n") and piece.endswith(b"\r\n")
        head, _, body = piece[2:-2].partition(b"\r\n\r\n")
        headers = email.message.Message()
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        found.append(Part(headers, body))
    return found


def related_type(response: httpx.Response) -> str:
    header = email.message.Message()
    header["Content-Type"] = response.headers["content-type"]
    value = header.get_param("type")
    assert isinstance(value, str)
    return value


def error(response: httpx.Response, status: int, parameter: str | None = None) -> str:
    """Check the one JSON error shape; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    problem = body["error"]
    assert problem["status"] == status
    assert isinstance(problem["code"], str) and problem["code"]
    assert isinstance(problem["message"], str) and problem["message"]
    if parameter is None:
        assert "parameter" not in problem
    else:
        assert problem["parameter"] == parameter
    return str(problem["message"])


# -- expected pixels -------------------------------------------------------------------------


def window(values: NDArray[np.float64], center: float, width: float, function: str) -> Pixels:
    """PS3.3 C.11.2.1.2.1 and C.11.2.1.3, written as the standard's pseudo-code, to 0..255."""
    if function == "sigmoid":
        y = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "linear-exact":
        y = np.select(
            [values <= center - width / 2, values > center + width / 2],
            [0.0, 255.0],
            ((values - center) / width + 0.5) * 255.0,
        )
    else:
        low = center - 0.5 - (width - 1) / 2
        high = center - 0.5 + (width - 1) / 2
        y = np.select(
            [values <= low, values > high],
            [0.0, 255.0],
            ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0,
        )
    return np.rint(y).astype(np.uint8)


def full_range(values: NDArray[np.float64]) -> Pixels:
    low, high = values.min(), values.max()
    scaled: Pixels = np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)
    return scaled
