"""Transfer syntax conversion for sending a stored instance to a peer (PS3.5 Section 10).

A peer that does not accept the stored syntax gets the instance uncompressed, or compressed
losslessly when pydicom has an encoder for a syntax it accepts; never lossy on the way out.
The stored bytes are only read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID

from pypacs.archive.pixels import codec_reason, decompress, syntax_name
from pypacs.errors import TranscodeError
from pypacs.model.syntax import LOSSY

# Uncompressed syntaxes we write, preferred first. Explicit VR Big Endian (retired, PS3.5 A.3)
# is read but never written: pydicom 3 does not swap OW/OF/OL/OD/OV values when it encodes
# big endian (its dcmwrite documentation says so), so the result would be wrong.
UNCOMPRESSED: tuple[str, ...] = (
    ts.ExplicitVRLittleEndian,
    ts.ImplicitVRLittleEndian,
    ts.DeflatedExplicitVRLittleEndian,
)

# Lossless compressed syntaxes (PS3.5 A.4), preferred first; each is a target only when
# pydicom has an available encoder. RLE comes before JPEG 2000 because pylibjpeg-openjpeg
# encodes with a fixed six resolution levels, which fails for images under 32 x 32.
LOSSLESS: tuple[str, ...] = (
    ts.RLELossless,
    ts.JPEG2000Lossless,
    ts.JPEGLSLossless,
    ts.JPEGLosslessSV1,
    ts.JPEGLossless,
    ts.HTJ2KLossless,
    ts.HTJ2KLosslessRPCL,
)

# Lossy JPEG is YCbCr as a rule; decoded to RGB, as DCMTK's dcmdjpeg does by default. The
# colour conversion rounds, which is acceptable only where the data is already lossy.
_TO_RGB_ON_DECODE = frozenset({ts.JPEGBaseline8Bit, ts.JPEGExtended12Bit})

# PS3.5 7.3: in big endian, values of these VRs are byte-swapped in units of this many bytes.
_SWAP_UNIT = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

_J2K_MIN_SIDE = 32  # 2 ** (6 resolution levels - 1), see LOSSLESS


def choose_syntax(stored: str, accepted: Sequence[str]) -> str | None:
    """The transfer syntax to send an instance stored as `stored` to a peer that accepts
    `accepted` (for that SOP class): `stored` itself when accepted; otherwise the best
    syntax we can produce from it, else None."""
    if stored in accepted:
        return stored
    if not _can_decode(stored):
        return None
    return next((target for target in _targets() if target in accepted), None)


def sending_syntax(proposed: Sequence[str]) -> str | None:
    """The syntax to accept for a presentation context over which stored instances of any
    syntax will be sent: uncompressed when proposed (every decodable instance goes out
    that way, none is compressed for nothing), else the first lossless one pypacs can
    encode, in the peer's order; None when neither is proposed."""
    uncompressed = next((s for s in UNCOMPRESSED if s in proposed), None)
    return uncompressed or next((s for s in proposed if s in _targets()), None)


def transcode(data: bytes | memoryview | BinaryIO, target: str) -> Dataset:
    """A stored Part 10 instance (with file meta) → a pydicom Dataset whose
    file_meta.TransferSyntaxUID is `target`, pixel data converted, ready to be written in
    `target` (archive/part10.py's encode_dataset, or a Part 10 file).

    Raises:
        TranscodeError: with a short human reason (pixel data cannot be decoded, no
            encoder, …).
    """
    ds = _read(data)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    wanted = UID(target)
    if wanted == stored:
        return ds
    if wanted not in _targets():
        raise TranscodeError(
            f"cannot produce {syntax_name(wanted)}: pypacs writes only little endian uncompressed "
            "syntaxes and lossless ones it has an encoder for"
        )
    if not _can_decode(stored):
        raise TranscodeError(f"no decoder for {syntax_name(stored)}")
    has_pixels = "PixelData" in ds
    if has_pixels and stored.is_compressed:
        _decompress(ds, stored)
    with codec_reason("cannot re-encode the data set"):
        if stored == ts.ExplicitVRBigEndian:
            _swap_to_little_endian(ds)
        _adopt_encoding(ds, wanted)
    if has_pixels and wanted.is_compressed:
        with codec_reason(f"cannot encode the pixel data as {syntax_name(wanted)}"):
            _compress(ds, wanted)
    ds.file_meta.TransferSyntaxUID = wanted
    return ds


@cache
def _targets() -> tuple[str, ...]:
    return UNCOMPRESSED + tuple(syntax for syntax in LOSSLESS if _can_encode(syntax))


@cache
def _can_decode(syntax: str) -> bool:
    if syntax in UNCOMPRESSED or syntax == ts.ExplicitVRBigEndian:
        return True
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:  # pydicom has no decoder at all for this syntax
        return False


@cache
def _can_encode(syntax: str) -> bool:
    try:
        return bool(get_encoder(syntax).is_available)
    except NotImplementedError:
        return False


def _read(data: bytes | memoryview | BinaryIO) -> Dataset:
    stream = io.BytesIO(data) if isinstance(data, bytes | memoryview) else data
    try:
        ds = dcmread(stream)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise TranscodeError(f"the stored instance does not parse: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise TranscodeError("the stored instance has no Transfer Syntax UID in its file meta")
    return ds


def _decompress(ds: Dataset, stored: UID) -> None:
    decompress(ds, stored, as_rgb=stored in _TO_RGB_ON_DECODE)
    if stored in LOSSY and "LossyImageCompression" not in ds:
        # PS3.3 C.7.6.1.1.5: once lossy compressed, always "01", also when decompressed.
        ds.LossyImageCompression = "01"


def _swap_to_little_endian(ds: Dataset) -> None:
    # pydicom keeps these values as the bytes it read (its dcmwrite documentation says so).
    # UN values stay as read: without the VR nobody knows their word size.
    for elem in ds.iterall():
        unit = _SWAP_UNIT.get(str(elem.VR))
        if unit and isinstance(elem.value, bytes) and len(elem.value) % unit == 0:
            elem.value = np.frombuffer(elem.value, f"u{unit}").byteswap().tobytes()


def _compress(ds: Dataset, target: UID) -> None:
    if target == ts.JPEG2000Lossless and min(ds.Rows, ds.Columns) < _J2K_MIN_SIDE:
        raise TranscodeError(
            f"the JPEG 2000 encoder needs at least {_J2K_MIN_SIDE} rows and columns, "
            f"the image is {ds.Rows} x {ds.Columns}"
        )
    # Same pixel values, so the same SOP Instance UID.
    ds.compress(target, generate_instance_uid=False)


def _adopt_encoding(ds: Dataset, target: UID) -> None:
    """Make `ds` say it is encoded as `target`, converting what was read in another encoding.

    pydicom writes elements still unparsed (raw) byte for byte, and a dataset whose original
    encoding differs from the one it is written in could keep the old encoding in them. So
    every raw element is parsed here with the encoding it was read in, and the dataset then
    says it was read in `target`.
    """
    encoding = (target.is_implicit_VR, target.is_little_endian)
    if ds.original_encoding == encoding:
        return
    for _ in ds.iterall():  # parsing also settles ambiguous VRs (PS3.5 6.2.2) from the data
        pass
    ds.set_original_encoding(*encoding)
