"""A data set's bytes as a DICOM file: the preamble, "DICM" and File Meta Information that
pypacs writes in front of data set bytes it keeps as received (PS3.10 7.1).

The header is seven small elements of explicit VR little endian, written directly: pydicom's
general writer costs more per instance than the rest of a receive path.
"""

from __future__ import annotations

import struct

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
    implementation_uid: str,
    implementation_version: str,
) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for one instance whose data set
    is encoded in ``transfer_syntax_uid``; the implementation is the one writing the file."""
    body = b"".join(
        (
            _VERSION,
            _short(0x0002, b"UI", sop_class_uid, b"\x00"),
            _short(0x0003, b"UI", sop_instance_uid, b"\x00"),
            _short(0x0010, b"UI", transfer_syntax_uid, b"\x00"),
            _short(0x0012, b"UI", implementation_uid, b"\x00"),
            _short(0x0013, b"SH", implementation_version[:16], b" "),
        )
    )
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + length + body
