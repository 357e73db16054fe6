"""Rendering one frame for display: Modality LUT, VOI window, polarity, colour, viewport,
and JPEG or PNG encoding (PS3.4 N.2 grayscale and colour pipelines; PS3.18 8.3.5.1).

Pure functions of a parsed dataset and the rendering parameters; nothing here reads the
archive or the request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from pypacs.archive.pixels import frame_array
from pypacs.errors import TranscodeError

JPEG = "image/jpeg"
PNG = "image/png"
RENDERED_TYPES = (JPEG, PNG)  # the default first (PS3.18 Table 8.7.4-1)
# PS3.3 C.11.2.1.3 VOI LUT Function, spelt as PS3.18 8.3.5.1.4 has it.
FUNCTIONS = ("linear", "linear-exact", "sigmoid")
DEFAULT_QUALITY = 90
_GRAY = ("MONOCHROME1", "MONOCHROME2")

Pixels = NDArray[Any]


@dataclass(frozen=True)
class Window:
    """A VOI window; ``width`` is at least 1 for ``linear``, above 0 otherwise."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Region:
    """Source image region (PS3.18 8.3.5.1.3): a negative width or height flips."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Rendering:
    """What to render: media type, window (None: the instance's own), viewport size and
    source region, JPEG quality, and the box a thumbnail fits in when no size is given."""

    media: str = JPEG
    window: Window | None = None
    size: tuple[int, int] | None = None
    region: Region | None = None
    quality: int = DEFAULT_QUALITY
    bound: int | None = None


def has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds and "Rows" in ds and "Columns" in ds


def apply_window(values: Pixels, window: Window) -> Pixels:
    """Window values to 0..255 (PS3.3 C.11.2.1.2.1, C.11.2.1.3.1, C.11.2.1.3.2)."""
    c, w = window.center, window.width
    x = values.astype(np.float64, copy=False)
    if window.function == "sigmoid":
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "linear-exact":
        y = ((x - c) / w + 0.5) * 255.0
    elif w == 1:  # linear of width 1 is a threshold
        y = np.where(x <= c - 0.5, 0.0, 255.0)
    else:
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def full_range(values: Pixels) -> Pixels:
    """The lowest value to 0, the highest to 255, linearly: for an image without a window."""
    return _stretched(values, float(values.min()), float(values.max()))


def _stretched(values: Pixels, low: float, high: float) -> Pixels:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)


# Samples taken through the floating point steps at once: the pipeline works in blocks of
# rows so that its working copies stay small whatever the frame's size.
_BLOCK_SAMPLES = 1 << 20


def _row_blocks(arr: Pixels) -> Iterator[slice]:
    per_row = max(1, arr[0].size) if arr.shape[0] else 1
    step = max(1, _BLOCK_SAMPLES // per_row)
    for start in range(0, arr.shape[0], step):
        yield slice(start, start + step)


def _functional_groups(ds: Dataset, index: int) -> Iterator[Dataset]:
    """The per-frame then the shared functional group items of frame ``index``."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        yield per_frame[index]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        yield shared[0]


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, MultiValue | list) else value)


def _rescale(ds: Dataset, index: int) -> tuple[float, float] | None:
    sources = [
        item.PixelValueTransformationSequence[0]
        for item in _functional_groups(ds, index)
        if item.get("PixelValueTransformationSequence")
    ]
    for source in [*sources, ds]:
        if "RescaleSlope" in source or "RescaleIntercept" in source:
            slope = source.get("RescaleSlope")
            intercept = source.get("RescaleIntercept")
            return (
                _first(slope) if slope not in (None, "") else 1.0,
                _first(intercept) if intercept not in (None, "") else 0.0,
            )
    return None


def modality_values(arr: Pixels, ds: Dataset, index: int) -> Pixels:
    """Stored values → modality values: Rescale Slope/Intercept or the Modality LUT
    (PS3.3 C.11.1), the frame's own in an enhanced multi-frame image."""
    rescale = _rescale(ds, index)
    if rescale is not None:
        slope, intercept = rescale
        return arr.astype(np.float64) * slope + intercept
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    return arr.astype(np.float64)


def own_window(ds: Dataset, index: int) -> Window | None:
    """The window the instance (or the frame) carries, first of several (PS3.3 C.11.2)."""
    sources = [
        item.FrameVOILUTSequence[0]
        for item in _functional_groups(ds, index)
        if item.get("FrameVOILUTSequence")
    ]
    for source in [*sources, ds]:
        center, width = source.get("WindowCenter"), source.get("WindowWidth")
        if center in (None, "") or width in (None, ""):
            continue
        try:
            window_center, window_width = _first(center), _first(width)
        except (TypeError, ValueError, IndexError):
            continue
        function = str(source.get("VOILUTFunction") or "LINEAR").lower().replace("_", "-")
        if function not in FUNCTIONS:
            function = "linear"
        if window_width >= 1 or (function != "linear" and window_width > 0):
            return Window(window_center, window_width, function)
    return None


@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT (PS3.3 C.11.2.1.1): ``table[v - first]`` for modality value ``v``, the
    first entry below ``first`` and the last one past the table; entries of ``bits`` bits."""

    first: int
    table: NDArray[np.float64]
    bits: int

    def apply(self, values: Pixels) -> Pixels:
        """Values through the table, scaled to 0..255."""
        at = np.clip(np.rint(values) - self.first, 0, len(self.table) - 1).astype(np.intp)
        scale = 255.0 / ((1 << self.bits) - 1)
        out: Pixels = np.clip(np.rint(self.table[at] * scale), 0, 255).astype(np.uint8)
        return out


def voi_lut(ds: Dataset) -> VoiLut | None:
    """The first VOI LUT of the VOI LUT Sequence (0028,3010), if the instance has one that
    can be read (PS3.3 C.11.2.1.1: LUT Descriptor = entries (0: 65536), first value
    mapped, bits per entry)."""
    items = ds.get("VOILUTSequence")
    if not items:
        return None
    item = items[0]
    descriptor, data = item.get("LUTDescriptor"), item.get("LUTData")
    if descriptor is None or data is None or len(descriptor) != 3:
        return None
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    # The first value mapped is signed (SS) where the values it maps may be negative; read
    # as US it comes as its two's complement.
    if first >= 1 << 15 and int(ds.get("PixelRepresentation") or 0) == 1:
        first -= 1 << 16
    if isinstance(data, bytes):  # OW: words in the data set's byte order
        little = ds.original_encoding[1] is not False
        table = np.frombuffer(data, "<u2" if little else ">u2")
    else:
        table = np.asarray(data if isinstance(data, MultiValue | list) else [data])
    if not 1 <= bits <= 16 or table.size < 1:
        return None
    return VoiLut(first, table[:entries].astype(np.float64), bits)


def inverted(ds: Dataset) -> bool:
    """Whether the minimum value shows white: MONOCHROME1 (PS3.3 C.7.6.3.1.2), or a
    Presentation LUT Shape (2050,0020) of INVERSE (PS3.3 C.11.6.1.2), which a MONOCHROME1
    image that carries it states again rather than inverting twice."""
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    return ds.PhotometricInterpretation == "MONOCHROME1" or shape == "INVERSE"


def _gray(arr: Pixels, ds: Dataset, index: int, window: Window | None) -> Pixels:
    # PS3.4 N.2.1.1: a window asked for replaces the VOI transformation; otherwise the
    # instance's VOI LUT, else its own window, else the frame's full range.
    lut = None if window else voi_lut(ds)
    window = window or (None if lut else own_window(ds, index))
    low, high = math.inf, -math.inf
    if window is None and lut is None:  # the full range of the whole frame, block by block
        for rows in _row_blocks(arr):
            values = modality_values(arr[rows], ds, index)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    out = np.empty(arr.shape[:2], np.uint8)
    for rows in _row_blocks(arr):
        values = modality_values(arr[rows], ds, index)
        if lut is not None:
            out[rows] = lut.apply(values)
        else:
            out[rows] = apply_window(values, window) if window else _stretched(values, low, high)
    if inverted(ds):
        np.subtract(255, out, out=out)
    return out


def _color(arr: Pixels, ds: Dataset) -> Pixels:
    out = np.empty((*arr.shape[:2], 3), np.uint8)
    for rows in _row_blocks(arr):
        out[rows] = _color_block(arr[rows], ds)
    return out


def _color_block(arr: Pixels, ds: Dataset) -> Pixels:
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:  # pydicom gives YBR_FULL and YBR_FULL_422 as RGB
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if bits > 8:
        arr = np.rint(arr.astype(np.float64) * 255.0 / ((1 << bits) - 1))
    return np.clip(arr, 0, 255).astype(np.uint8)


def frame_pixels(ds: Dataset, index: int, window: Window | None) -> Pixels:
    """Frame ``index`` (from 0) as 8-bit gray or RGB, ready to encode.

    Raises:
        TranscodeError: the pixel data cannot be decoded or has no rendering.
    """
    arr = frame_array(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel") or 1) == 1 and photometric in _GRAY:
        return _gray(arr, ds, index, window)
    if arr.ndim == 3 or photometric == "PALETTE COLOR":
        return _color(arr, ds)
    raise TranscodeError(f"pypacs does not render {photometric or 'this'} pixel data")


def _cropped(image: Image.Image, region: Region) -> Image.Image:
    x0, x1 = sorted((region.x, region.x + region.width))
    y0, y1 = sorted((region.y, region.y + region.height))
    image = image.crop((x0, y0, x1, y1))
    if region.width < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if region.height < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def _fit(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the image's aspect ratio within ``box``."""
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(pixels: Pixels, rendering: Rendering) -> bytes:
    """Region, viewport and encoding (PS3.18 8.3.5.1.3: the region, then the viewport)."""
    image = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    if rendering.region is not None:
        image = _cropped(image, rendering.region)
    box = rendering.size
    if box is None and rendering.bound is not None:
        bound = rendering.bound
        box = (bound, bound) if max(image.size) > bound else None
    if box is not None:
        size = _fit(image.width, image.height, box)
        if size != image.size:
            # A box reduction first where it shrinks 3 times or more: fast, and as sharp.
            image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = BytesIO()
    if rendering.media == PNG:
        image.save(out, "PNG")
    else:
        image.save(out, "JPEG", quality=rendering.quality)
    return out.getvalue()


def render(ds: Dataset, index: int, rendering: Rendering) -> bytes:
    """Frame ``index`` (from 0) of ``ds`` rendered as ``rendering`` says.

    Raises:
        TranscodeError: the pixel data cannot be decoded or rendered.
    """
    return encode(frame_pixels(ds, index, rendering.window), rendering)
