"""A data set's bytes as a DICOM file: the preamble, "DICM" and File Meta Information that
pypacs writes in front of data set bytes (PS3.10 7.1), and the one implementation every file
pypacs writes names.

The header is a few small elements of explicit VR little endian, written directly: pydicom's
general writer costs more per instance than the rest of a receive path.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

import pypacs
from pypacs.errors import TranscodeError

# PS3.7 D.3.3.2, PS3.10 7.1: the implementation that writes a file names itself. A UID under
# the 2.25 root (PS3.5 9.1, B.2): an integer from a UUID, fixed once for pypacs.
IMPLEMENTATION_CLASS_UID = "2.25.259890896451296903570581758567437041133"
# PS3.7 D.3.3.2.2: Implementation Version Name, SH of at most 16 characters.
IMPLEMENTATION_VERSION_NAME = f"PYPACS_{pypacs.__version__}"[:16]

PREAMBLE = bytes(128) + b"DICM"
# (0002,0001) File Meta Information Version, OB, 00 01.
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _short(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    source_ae_title: str | None = None,
) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for one instance whose data set
    is encoded in ``transfer_syntax_uid``, written by pypacs (``source_ae_title``: the AE
    that made the file, where pypacs made its data set)."""
    elements = [
        _VERSION,
        _short(0x0002, b"UI", sop_class_uid, b"\x00"),
        _short(0x0003, b"UI", sop_instance_uid, b"\x00"),
        _short(0x0010, b"UI", transfer_syntax_uid, b"\x00"),
        _short(0x0012, b"UI", IMPLEMENTATION_CLASS_UID, b"\x00"),
        _short(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME, b" "),
    ]
    if source_ae_title:
        elements.append(_short(0x0016, b"AE", source_ae_title[:16], b" "))
    body = b"".join(elements)
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + length + body


def framed(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, dataset: bytes
) -> bytes:
    """A data set's bytes, as they are, behind the file meta header pypacs writes."""
    return file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid) + dataset


def encode_dataset(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """``ds`` (no file meta) encoded in ``transfer_syntax_uid`` (PS3.5 7, A.5 for deflate).

    Raises:
        TranscodeError: pydicom cannot write the data set in that syntax.
    """
    syntax = UID(transfer_syntax_uid)
    out = DicomBytesIO()
    out.is_implicit_VR = syntax.is_implicit_VR
    out.is_little_endian = syntax.is_little_endian
    try:
        write_dataset(out, ds)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise TranscodeError(f"cannot encode the data set as {syntax.name}: {exc}") from exc
    encoded = out.getvalue()
    if syntax.is_deflated:
        # PS3.5 A.5: the whole data set deflated (RFC 1951, no zlib header), padded to even.
        deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = deflater.compress(encoded) + deflater.flush()
        if len(encoded) % 2:
            encoded += b"\x00"
    return encoded
