"""The frames of stored pixel data, found and decoded so that none is ever lost.

pydicom trusts a Basic Offset Table to split encapsulated pixel data into frames; real
devices write wrong ones (a 4-frame JPEG Lossless from one vendor decodes to 3 frames
through it). Here the frames are found by rules that check each other (PS3.5 A.4), the
pixel data is re-encapsulated one fragment per frame before any decoder sees it, and a
decode that gives fewer bytes than Rows, Columns, Samples per Pixel, Bits Allocated and
the stored Number of Frames say is an error, never a shorter instance.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID

from pypacs.errors import TranscodeError

# What pydicom, its plugins and GDCM raise on data they cannot decode.
CODEC_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    AttributeError,
    KeyError,
    TypeError,
    IndexError,
    EOFError,
)

# PS3.5 A.4: these describe encapsulated fragments and must go with them.
ENCAPSULATION_ONLY = (0x7FE00001, 0x7FE00002, 0x7FE00003)  # extended offset table, lengths, total

# The marker each encoded frame begins with: SOI for the JPEG family (ISO 10918-1 B.2.1,
# ISO 14495-1 C.1), SOC + SIZ for a JPEG 2000 codestream (ISO 15444-1 A.4.1); a frame's
# later fragments never begin with it.
_JPEG_SOI = b"\xff\xd8"
_J2K_SOC = b"\xff\x4f\xff\x51"
_START_MARKER: dict[str, bytes] = {
    **dict.fromkeys(ts.JPEGTransferSyntaxes, _JPEG_SOI),
    **dict.fromkeys(ts.JPEGLSTransferSyntaxes, _JPEG_SOI),
    **dict.fromkeys(ts.JPEG2000TransferSyntaxes, _J2K_SOC),
}
_ITEM_HEADER = 8  # PS3.5 A.4: (FFFE,E000) tag and a 4-byte length


def start_marker(syntax: str) -> bytes | None:
    """The marker each encoded frame of ``syntax`` begins with, and no later fragment of it."""
    return _START_MARKER.get(syntax)


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames as stored; 1 when absent or unreadable."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def pixel_data_length(ds: Dataset, frames: int) -> int:
    """Bytes of ``frames`` uncompressed frames, without the trailing pad byte (PS3.5 8.1.1;
    with Bits Allocated 1 the frames are packed one after another, 8 pixels a byte)."""
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    return (bits * int(ds.BitsAllocated) * frames + 7) // 8


def encoded_frames(ds: Dataset, syntax: str) -> list[bytes]:
    """The encoded frames of encapsulated pixel data, as many as Number of Frames says.

    Raises:
        TranscodeError: the fragments cannot be grouped into that many frames.
    """
    frames = number_of_frames(ds)
    buffer = ds.PixelData
    try:
        fragments = list(generate_fragments(io.BytesIO(buffer)))
    except CODEC_ERRORS as exc:
        raise TranscodeError(f"the encapsulated pixel data does not parse: {exc}") from exc
    if not fragments:
        raise TranscodeError("the encapsulated pixel data holds no fragment")
    bot, fragments = offset_table(fragments[0]), fragments[1:]
    if not fragments:
        raise TranscodeError("the encapsulated pixel data holds no fragment after its offsets")
    spans = [Fragment(len(f), f[:_HEAD]) for f in fragments]
    firsts = frame_starts(frames, syntax, bot, extended_offsets(ds), spans)
    return _group(fragments, firsts)


@dataclass(frozen=True)
class Fragment:
    """What the frame finding needs of one fragment: its length and its first bytes."""

    length: int
    head: bytes


_HEAD = 4  # bytes of a fragment enough to see a frame's start marker


def frame_starts(
    frames: int, syntax: str, bot: list[int], extended: list[int] | None, fragments: list[Fragment]
) -> list[int]:
    """The index of the first fragment of each of ``frames`` frames (PS3.5 A.4), by rules
    that check each other: one fragment a frame when the counts agree, else the Extended
    Offset Table, then the Basic one, each only where it points at item starts and frame
    markers, else the markers alone.

    Raises:
        TranscodeError: the fragments cannot be grouped into that many frames.
    """
    if frames == 1:
        return [0]
    if len(fragments) == frames:  # PS3.5 A.4: one fragment per frame, the usual case
        return list(range(frames))
    marker = _START_MARKER.get(syntax)
    for table in (extended, bot):
        firsts = None if table is None else _by_offsets(table, fragments)
        if (
            firsts is not None
            and len(firsts) == frames
            and (marker is None or all(fragments[i].head.startswith(marker) for i in firsts))
        ):
            return firsts
    by_marker = _by_marker(fragments, marker)
    if by_marker is not None and len(by_marker) == frames:
        return by_marker
    raise TranscodeError(
        f"cannot find the {frames} frames Number of Frames gives in {len(fragments)} "
        "fragments (the offset table and the frame markers disagree with it)"
    )


def offset_table(item: bytes) -> list[int]:
    """The Basic Offset Table's offsets (PS3.5 A.4); none when its length is no multiple of 4."""
    if len(item) % 4:
        return []
    return [int(v) for v in np.frombuffer(item, "<u4")]


def extended_offsets(ds: Dataset) -> list[int] | None:
    """PS3.3 C.7.6.3.1.8 Extended Offset Table: 8-byte offsets; None when absent or malformed."""
    table = ds.get("ExtendedOffsetTable")
    if not isinstance(table, bytes) or len(table) % 8:
        return None
    return [int(v) for v in np.frombuffer(table, "<u8")]


def item_starts(fragments: list[Fragment]) -> list[int]:
    """Each fragment's offset from the first fragment's item tag (what offset tables hold)."""
    starts, position = [], 0
    for fragment in fragments:
        starts.append(position)
        position += _ITEM_HEADER + fragment.length
    return starts


def _group(fragments: list[bytes], first_of_frame: list[int]) -> list[bytes]:
    bounds = [*first_of_frame, len(fragments)]
    return [b"".join(fragments[a:b]) for a, b in itertools.pairwise(bounds)]


def _by_offsets(table: list[int], fragments: list[Fragment]) -> list[int] | None:
    """An offset table (PS3.5 A.4, PS3.3 C.7.6.3.1.8): used only when every offset is where
    an item begins."""
    position = {start: index for index, start in enumerate(item_starts(fragments))}
    if not table or table[0] != 0 or any(b <= a for a, b in itertools.pairwise(table)):
        return None
    if any(offset not in position for offset in table):
        return None
    return [position[offset] for offset in table]


def _by_marker(fragments: list[Fragment], marker: bytes | None) -> list[int] | None:
    if marker is None or not fragments[0].head.startswith(marker):
        return None
    return [i for i, f in enumerate(fragments) if f.head.startswith(marker)]


def normalise_encapsulation(ds: Dataset, syntax: str) -> None:
    """Re-encapsulate compressed pixel data one fragment per frame with a correct offset
    table, so that every decoder finds the frames ``encoded_frames`` found.

    Raises:
        TranscodeError: the frames cannot be found.
    """
    if "PixelData" not in ds or not UID(syntax).is_encapsulated:
        return
    if syntax in ts.MPEGTransferSyntaxes:
        return  # a video stream: its fragments are no frames (PS3.5 8.2.5)
    frames = encoded_frames(ds, syntax)
    for tag in ENCAPSULATION_ONLY:
        ds.pop(tag, None)
    ds.PixelData = encapsulate(frames, has_bot=True)


def decompress(ds: Dataset, syntax: UID, *, as_rgb: bool) -> None:
    """Decompress ``ds`` in place (pydicom's decoders, then GDCM for what they refuse),
    and check that every stored frame came out whole.

    Raises:
        TranscodeError: no decoder could decode it, or it decoded short.
    """
    frames = number_of_frames(ds)
    normalise_encapsulation(ds, syntax)
    try:
        with codec_reason(f"cannot decode the {syntax_name(syntax)} pixel data"):
            # Same pixel values, so the same SOP Instance UID (pydicom makes a new one by
            # default). pydicom updates Photometric Interpretation and Planar Configuration.
            ds.decompress(as_rgb=as_rgb, generate_instance_uid=False)
    except TranscodeError:
        if not _gdcm_can(syntax):
            raise
        _gdcm_decompress(ds, syntax, frames)
    expected = pixel_data_length(ds, frames)
    got = len(ds.PixelData)
    if got not in (expected, expected + 1) or number_of_frames(ds) != frames:
        raise TranscodeError(
            f"{syntax_name(syntax)} decoded to {number_of_frames(ds)} frame(s) and {got} bytes of "
            f"pixel data where the stored attributes say {frames} frame(s) and {expected} bytes"
        )


def frame_array(ds: Dataset, index: int) -> np.ndarray[Any, Any]:
    """Frame ``index`` (from 0) of a parsed Part 10 instance decoded, as pydicom gives it
    (colour as RGB).

    ``ds`` must have been through ``normalise_encapsulation``.

    Raises:
        TranscodeError: the frame cannot be decoded.
    """
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    try:
        with codec_reason(f"cannot decode frame {index + 1}"):
            return pixel_array(ds, index=index)
    except TranscodeError:
        if not _gdcm_can(syntax):
            raise
        frame = encoded_frames(ds, syntax)[index]
        return _as_array(ds, _gdcm_frame(ds, syntax, frame))


@contextmanager
def codec_reason(reason: str) -> Iterator[None]:
    """Turn what pydicom and its plugins raise into TranscodeError, keeping the cause."""
    try:
        yield
    except CODEC_ERRORS as exc:
        detail = " ".join(str(exc).split())  # pydicom lists each plugin's failure on a line
        raise TranscodeError(f"{reason}: {detail}") from exc


def syntax_name(syntax: UID) -> str:
    return syntax.name if syntax.name != str(syntax) else f"transfer syntax {syntax}"


# GDCM decodes what pydicom's plugins refuse, above all 12-bit JPEG Extended (process 4),
# which DCMTK-based archives decode too. Only the JPEG family, grayscale: the cases seen.
_GDCM_SYNTAXES = frozenset({ts.JPEGExtended12Bit, ts.JPEGLossless, ts.JPEGLosslessSV1})


def _gdcm_can(syntax: UID) -> bool:
    if syntax not in _GDCM_SYNTAXES:
        return False
    try:
        import gdcm  # noqa: F401  (python-gdcm)
    except ImportError:
        return False
    return True


def _gdcm_frame(ds: Dataset, syntax: UID, encoded: bytes) -> bytes:
    import gdcm

    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise TranscodeError(f"cannot decode the {syntax_name(syntax)} colour pixel data")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(encoded)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((int(ds.Columns), int(ds.Rows), 1))
    image.SetDataElement(element)
    kind = gdcm.PhotometricInterpretation.GetPIType(str(ds.PhotometricInterpretation))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(kind))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(syntax))))
    bits_stored = int(ds.get("BitsStored") or ds.BitsAllocated)
    image.SetPixelFormat(
        gdcm.PixelFormat(
            1, int(ds.BitsAllocated), bits_stored, bits_stored - 1, int(ds.PixelRepresentation)
        )
    )
    decoded: str = image.GetBuffer()
    out = decoded.encode("utf-8", "surrogateescape")
    if len(out) != pixel_data_length(ds, 1):
        raise TranscodeError(f"GDCM decoded the {syntax_name(syntax)} frame short")
    return out


def _gdcm_decompress(ds: Dataset, syntax: UID, frames: int) -> None:
    decoded = b"".join(_gdcm_frame(ds, syntax, f) for f in encoded_frames(ds, syntax))
    ds.PixelData = decoded + (b"\0" if len(decoded) % 2 else b"")
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = ts.ExplicitVRLittleEndian
    for tag in ENCAPSULATION_ONLY:
        ds.pop(tag, None)
    ds["PixelData"].is_undefined_length = False
    if frames > 1:
        ds.NumberOfFrames = frames


def _as_array(ds: Dataset, frame: bytes) -> np.ndarray[Any, Any]:
    bits = int(ds.BitsAllocated)
    dtype = np.dtype(f"{'i' if int(ds.PixelRepresentation) else 'u'}{bits // 8}").newbyteorder("<")
    return np.frombuffer(frame, dtype).reshape(int(ds.Rows), int(ds.Columns))
