"""What a retrieve sends: the instances under the named entities, counted first, then
streamed one by one from the blob store (PS3.4 C.4.2.3.1, C.4.3.3.1)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pypacs.errors import StoreError

_PREAMBLE = 128
# PS3.5 7.1.2: explicit VR elements whose length field is 4 bytes after 2 reserved ones.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= {b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class StoredInstance:
    """One instance a retrieve sends: its identity, how it is encoded, where it lives."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int


@dataclass
class Retrieval:
    """The instances of one retrieve, all read from one snapshot of the index: ``count``
    is exact for what ``instances`` yields."""

    count: int
    # Distinct (SOP Class UID, Transfer Syntax UID) pairs of the instances.
    syntaxes: list[tuple[str, str]]
    instances: Iterator[StoredInstance]


def dataset_offset(data: bytes | memoryview) -> int:
    """Where the data set starts in a stored Part 10 file: after the 128-byte preamble,
    "DICM" and the explicit VR little endian group 0002 elements (PS3.10 7.1).

    Raises:
        StoreError: the bytes are not a Part 10 file.
    """
    view = memoryview(data)
    if bytes(view[_PREAMBLE : _PREAMBLE + 4]) != b"DICM":
        raise StoreError("stored instance lacks the DICM prefix")
    pos = _PREAMBLE + 4
    try:
        while pos + 8 <= len(view):
            group, _element = struct.unpack_from("<HH", view, pos)
            if group != 0x0002:
                return pos
            vr = bytes(view[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", view, pos + 8)
                pos += 12 + length
            else:
                (length,) = struct.unpack_from("<H", view, pos + 6)
                pos += 8 + length
    except struct.error as exc:
        raise StoreError(f"stored file meta information is cut short: {exc}") from exc
    if pos == len(view):
        return pos
    raise StoreError("stored file meta information is cut short")
