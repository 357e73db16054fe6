"""A received C-STORE data set as a DICOM file: the data set's bytes behind a file meta header.

pynetdicom builds the header through pydicom's general writer, which costs more per
instance than the rest of the receive path; the header is seven small elements of explicit
VR little endian (PS3.10 7.1), written here directly.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import cast

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE

_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _short(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for one received instance."""
    body = b"".join(
        (
            _VERSION,
            _short(0x0002, b"UI", sop_class_uid, b"\x00"),
            _short(0x0003, b"UI", sop_instance_uid, b"\x00"),
            _short(0x0010, b"UI", transfer_syntax_uid, b"\x00"),
            _short(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID, b"\x00"),
            _short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
        )
    )
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + length + body


def received_part10(request: C_STORE, transfer_syntax_uid: str) -> bytes:
    """A received C-STORE's data set bytes, as they came, behind their file meta header."""
    meta = file_meta(
        str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), transfer_syntax_uid
    )
    return meta + cast(BytesIO, request.DataSet).getvalue()
