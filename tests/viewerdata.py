"""Generated instances for the series viewer and the rendering tests: a CT series, a
multi-frame ultrasound image whose frames differ, a text SR, an encapsulated PDF, and small
images that exercise the grayscale pipeline (MONOCHROME1, VOI LUT Sequence, Presentation LUT
Shape, many frames, a checkerboard to downscale). Each generator returns the dataset and what
a test compares with, computed here from the definition."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from dicomgen import Spec, make_dataset, uid

PATIENT = "VIEWER-1"
ROOT = 9207  # first UID component of this set, apart from other tests' data
STUDY = uid(ROOT, 1)
CT_WINDOW = (40.0, 400.0)

U8 = NDArray[np.uint8]


def series_uid(series: int) -> str:
    return uid(ROOT, 1, series)


def _base(series: int, number: int, sop_class: str, modality: str) -> Dataset:
    ds = make_dataset(Spec(PATIENT, "Viewer^Vic", 1, series, number, modality="CT"))
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series_uid(series)
    ds.SOPInstanceUID = uid(ROOT, 1, series, number)
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.SeriesDescription = f"{modality} series {series}"
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _no_pixels(ds: Dataset) -> Dataset:
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    ):
        delattr(ds, keyword)
    return ds


def ct_slice(number: int, size: int = 64) -> Dataset:
    """Slice ``number`` (from 1) of a CT series: a disk whose radius grows with the slice
    number on a ramp, stored 12 bits with Rescale Slope 1, Intercept -1024, window 40/400."""
    ds = _base(1, number, "1.2.840.10008.5.1.4.1.1.2", "CT")
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = (xx * 1500 // size).astype(np.uint16)  # -1024 .. 476 HU across
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (2 + number * size / 100) ** 2
    arr = np.where(disk, np.uint16(1024 + 60), ramp).astype(np.uint16)
    ds.Rows = ds.Columns = size
    ds.PixelData = arr.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = CT_WINDOW
    ds.SliceLocation = float(number)
    return ds


def us_frame(index: int, frames: int, rows: int = 48, columns: int = 64) -> U8:
    """Frame ``index`` (from 0): a bright vertical bar whose place tells the frame."""
    arr = np.full((rows, columns), 20, np.uint8)
    left = index * columns // frames
    arr[:, left : left + max(2, columns // frames)] = 230
    arr[index % rows, :] = 120
    return arr


def us_multiframe(frames: int = 8, series: int = 2) -> Dataset:
    """A multi-frame ultrasound image, 8-bit MONOCHROME2, each frame distinct."""
    ds = _base(series, 1, UltrasoundMultiFrameImageStorage, "US")
    arr = np.stack([us_frame(i, frames) for i in range(frames)])
    ds.Rows, ds.Columns = arr.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40.0
    ds.PixelData = arr.tobytes()
    return ds


@dataclass(frozen=True)
class Content:
    """An SR content item: its concept name, text, and the items under it."""

    name: str
    text: str | None = None
    children: tuple[Content, ...] = ()


SR_TREE = Content(
    "Report",
    None,
    (
        Content("Findings", "A 4 mm nodule in the right upper lobe."),
        Content(
            "Impression",
            None,
            (Content("Conclusion", "Follow-up CT in 6 months suggested."),),
        ),
    ),
)


def _concept(meaning: str) -> Sequence:
    code = Dataset()
    code.CodeValue = meaning.upper()[:16]
    code.CodingSchemeDesignator = "99VIEW"
    code.CodeMeaning = meaning
    return Sequence([code])


def _content_item(content: Content) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ConceptNameCodeSequence = _concept(content.name)
    if content.text is not None:
        item.ValueType, item.TextValue = "TEXT", content.text
    else:
        item.ValueType, item.ContinuityOfContent = "CONTAINER", "SEPARATE"
        item.ContentSequence = Sequence([_content_item(c) for c in content.children])
    return item


def text_sr(series: int = 3) -> Dataset:
    """A Basic Text SR holding ``SR_TREE``."""
    ds = _no_pixels(_base(series, 1, BasicTextSRStorage, "SR"))
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = _concept(SR_TREE.name)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentSequence = Sequence([_content_item(c) for c in SR_TREE.children])
    return ds


@cache
def pdf_document() -> bytes:
    """A one-page PDF (Pillow writes it, with the time in it: made once) of a picture."""
    picture = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(picture).rectangle((20, 20, 180, 80), fill="navy")
    out = io.BytesIO()
    picture.save(out, "PDF")
    return out.getvalue()


def encapsulated_pdf(series: int = 4) -> tuple[Dataset, bytes]:
    """An Encapsulated PDF instance (PS3.3 A.45.1) and its document."""
    document = pdf_document()
    ds = _no_pixels(_base(series, 1, EncapsulatedPDFStorage, "DOC"))
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = "Viewer test document"
    ds.BurnedInAnnotation = "NO"
    ds.ConceptNameCodeSequence = _concept("Report")
    # An odd-length document gets a pad byte that Encapsulated Document Length leaves out.
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    return ds, document


def _secondary(number: int, arr: NDArray[np.uint16], bits: int = 12) -> Dataset:
    ds = _base(9, number, SecondaryCaptureImageStorage, "OT")
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelData = arr.astype("<u2").tobytes()
    return ds


STEPS = np.array([0, 100, 200, 300, 400, 500, 600, 700], np.uint16)


def steps_image() -> NDArray[np.uint16]:
    """8 x 8: row r holds the stored value STEPS[r]."""
    return np.repeat(STEPS[:, None], 8, axis=1)


def monochrome1() -> Dataset:
    """MONOCHROME1 without a window: the lowest stored value shows white."""
    ds = _secondary(1, steps_image())
    ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


# A VOI LUT of 8 entries of 8 bits from stored value 100: 100 → 0, 101 → 10, … 107 → 255.
VOI_FIRST = 100
VOI_TABLE = [0, 10, 20, 40, 80, 160, 200, 255]


def voi_lut() -> Dataset:
    """Values 98..109 across; a VOI LUT Sequence maps them, and a window it must not use."""
    arr = np.tile(np.arange(98, 110, dtype=np.uint16), (4, 1))
    ds = _secondary(2, arr)
    lut = Dataset()
    lut.LUTDescriptor = [len(VOI_TABLE), VOI_FIRST, 8]
    lut.LUTData = VOI_TABLE
    lut["LUTData"].VR = "US"
    lut.LUTExplanation = "test table"
    ds.VOILUTSequence = Sequence([lut])
    ds.WindowCenter, ds.WindowWidth = 0, 10  # PS3.4 N.2.1.1: the LUT comes first here
    return ds


def voi_expected() -> U8:
    """What ``voi_lut()`` renders to: the table's entry, scaled from 8 bits (255 = 255)."""
    values = np.arange(98, 110)
    at = np.clip(values - VOI_FIRST, 0, len(VOI_TABLE) - 1)
    row = np.array(VOI_TABLE, np.uint8)[at]
    return np.tile(row, (4, 1))


def inverse_shape() -> Dataset:
    """MONOCHROME2 with Presentation LUT Shape INVERSE: shown inverted."""
    ds = _secondary(3, steps_image())
    ds.PresentationLUTShape = "INVERSE"
    return ds


def frames_image(frames: int = 10) -> Dataset:
    """``frames`` frames of 8 x 8, frame k (from 0) filled with 10 * k + 5 and a bright pixel
    at (k, k), so that each frame renders differently from every other."""
    arr = np.stack([_frame_pattern(k) for k in range(frames)])
    ds = _secondary(4, arr)
    ds.NumberOfFrames = frames
    return ds


def _frame_pattern(k: int) -> NDArray[np.uint16]:
    arr = np.full((8, 8), 10 * k + 5, np.uint16)
    arr[k % 8, k % 8] = 4000
    return arr


def frame_pattern(k: int) -> NDArray[np.uint16]:
    """Frame ``k`` (from 0) of ``frames_image()``."""
    return _frame_pattern(k)


def checkerboard(size: int = 512, cell: int = 1) -> NDArray[np.uint16]:
    """A checkerboard of single-pixel cells (0 and 255) with a bright square in the middle:
    shrunk with a nearest-neighbour filter it turns into stripes or a flat field."""
    yy, xx = np.mgrid[0:size, 0:size]
    arr: NDArray[np.uint16] = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint16)
    quarter = size // 4
    arr[quarter : 3 * quarter, quarter : 3 * quarter] = 255
    return arr


def checkerboard_image() -> Dataset:
    """``checkerboard()`` as an 8-bit-stored image with the window 127.5/256 (identity)."""
    ds = _secondary(5, checkerboard(), bits=8)
    ds.WindowCenter, ds.WindowWidth = 128, 256
    return ds


def rendering_set() -> list[Dataset]:
    """The images of the rendering tests."""
    return [monochrome1(), voi_lut(), inverse_shape(), frames_image(), checkerboard_image()]


def viewer_set(slices: int = 40) -> list[Dataset]:
    """The series of the viewer tests: CT, US multi-frame, SR, encapsulated PDF."""
    return [
        *(ct_slice(n) for n in range(1, slices + 1)),
        us_multiframe(),
        text_sr(),
        encapsulated_pdf()[0],
    ]
