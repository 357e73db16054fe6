"""A header scan of a Part 10 file's bytes: its top-level elements walked in place (explicit
and implicit VR little endian), the common VRs decoded here, the rest by pydicom one element
at a time; bulk data never copied.

The outputs are those of ingest.py's pydicom path (tests hold them equal on every corpus);
anything this scan does not handle the same way makes it give up (``None``), and the caller
takes that path instead.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pypacs.archive.dicomjson import element_json
from pypacs.errors import InvalidInstance, InvalidKind
from pypacs.model.attributes import BULK_DATA_THRESHOLD, level_of
from pypacs.model.levels import Level

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_CHARSET = 0x00080005
_MAX_DEPTH = 32
# PS3.5 7.1.2: explicit VRs whose length takes 4 bytes after 2 reserved ones.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT"})
_LONG_VRS |= {"UV"}
_SHORT_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT"})
_SHORT_VRS |= {"PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}
# Values never copied: bulk data by model/attributes.py's rule (as ingest's _is_bulk).
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# PS3.5 6.2: VRs decoded here (ASCII values); the others go to pydicom.
_MULTI = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})  # pydicom's multi_string
_TEXT = frozenset({"LO", "SH", "UC"})
_SINGLE = frozenset({"LT", "ST", "UT"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
# PS3.5 6.2: IS and DS values pydicom takes without complaint; odder ones go to pydicom.
# Their values stay text for the index columns (as str() of pydicom's IS and DS gives them).
_NUMBER_TEXT: dict[str, tuple[re.Pattern[str], Callable[[str], Any]]] = {
    "IS": (re.compile(r" *[+-]?[0-9]{1,9} *"), int),  # well inside the 32-bit range
    "DS": (re.compile(r" *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)? *"), float),
}
_SYNTAXES: dict[str, bool] = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}


class _GiveUp(Exception):
    """Something this scan does not handle as pydicom would."""


@dataclass(frozen=True)
class Scanned:
    """A header as the scan found it: each level's DICOM JSON, values of the top-level
    elements by tag (for the indexed columns), and the File Meta Information's UIDs."""

    values: dict[int, Any]
    parts: dict[Level, dict[str, Any]]
    transfer_syntax: str
    media_sop_class: str | None
    media_sop_instance: str | None


def scan_part10(data: bytes | bytearray | memoryview) -> Scanned | None:
    """Scan a Part 10 file's header; None where the pydicom path must decide."""
    view = memoryview(data)
    try:
        meta, start = _meta(view)
        syntax = meta.get(0x00020010)
        if not isinstance(syntax, str) or syntax not in _SYNTAXES:
            return None
        values, parts = _dataset(view, start, _SYNTAXES[syntax])
    except (_GiveUp, struct.error, UnicodeDecodeError):
        return None
    finally:
        view.release()
    sop_class, sop_instance = meta.get(0x00020002), meta.get(0x00020003)
    return Scanned(
        values,
        parts,
        syntax,
        sop_class if isinstance(sop_class, str) else None,
        sop_instance if isinstance(sop_instance, str) else None,
    )


def _meta(view: memoryview) -> tuple[dict[int, Any], int]:
    # PS3.10 7.1: preamble, "DICM", then group 2 in explicit VR little endian, its group
    # length first.
    if bytes(view[128:132]) != b"DICM" or bytes(view[132:138]) != b"\x02\x00\x00\x00UL":
        raise _GiveUp
    end = 144 + struct.unpack_from("<I", view, 140)[0]
    pos, meta = 144, {}
    while pos < end:
        tag, vr, length, vpos = _element(view, pos, False)
        if tag >> 16 != 0x0002 or length == _UNDEFINED or vpos + length > end:
            raise _GiveUp
        if vr == "UI":
            meta[tag] = _multi(bytes(view[vpos : vpos + length]))
        pos = vpos + length
    if pos != end or (len(view) >= end + 2 and bytes(view[end : end + 2]) == b"\x02\x00"):
        raise _GiveUp  # group 2 goes on past its length: pydicom reads it otherwise
    return meta, end


def _element(view: memoryview, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """Tag, VR (None: implicit), length and value position of the element at ``pos``."""
    group, element, length = struct.unpack_from("<HHI", view, pos)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, None, length, pos + 8
    vr = bytes(view[pos + 4 : pos + 6]).decode("ascii")
    if vr in _SHORT_VRS:
        return tag, vr, length >> 16, pos + 8
    if vr in _LONG_VRS:
        return tag, vr, struct.unpack_from("<I", view, pos + 8)[0], pos + 12
    raise _GiveUp


def _skip_items(view: memoryview, pos: int, implicit: bool, depth: int) -> int:
    """The position after a sequence (or encapsulated pixel data) of undefined length:
    items up to the sequence delimiter (PS3.5 7.5.2, A.4)."""
    if depth > _MAX_DEPTH:
        raise _GiveUp
    end = len(view)
    while True:
        tag, length = struct.unpack_from("<II", view, pos)
        tag = (tag & 0xFFFF) << 16 | tag >> 16
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _GiveUp
        if length != _UNDEFINED:
            pos += length
            if pos > end:
                raise _GiveUp
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            tag, _, length, vpos = _element(view, pos, implicit)
            if tag == _ITEM_END:
                pos = vpos
                break
            pos = (
                _skip_items(view, vpos, implicit, depth + 1)
                if length == _UNDEFINED
                else vpos + length
            )
            if pos > end:
                raise _GiveUp


def _dataset(
    view: memoryview, pos: int, implicit: bool
) -> tuple[dict[int, Any], dict[Level, dict[str, Any]]]:
    end = len(view)
    # Each element in order: its value and JSON where decoded here, else None. The raw
    # elements go to pydicom only when one of them needs it, all of them then (its decoding
    # reads others: the character set, Pixel Representation for an ambiguous VR, ...).
    elements: dict[int, tuple[Any, dict[str, Any]] | None] = {}
    raws: dict[BaseTag, RawDataElement | DataElement] = {}
    plain: list[tuple[int, str | None, int, bytes, int]] = []  # tag, VR, length, value, at
    slow = False
    encodings: list[str] = ["iso8859"]
    while pos < end:
        tag, vr, length, vpos = _element(view, pos, implicit)
        if tag >> 16 in (0x0002, 0xFFFE):
            raise _GiveUp
        known_vr = vr or dictionary_vr(tag)
        if length == _UNDEFINED:
            pos = _skip_items(view, vpos, implicit, 0)
            if tag in _PIXEL_TAGS:
                continue
            if known_vr != "SQ":
                raise _GiveUp
            content = BytesIO(bytes(view[vpos:pos]))
            seq = read_sequence(content, implicit, True, _UNDEFINED, encodings, vpos)
            raws[BaseTag(tag)] = DataElement(tag, "SQ", seq, vpos, is_undefined_length=True)
            elements[tag] = None
            slow = True
            continue
        pos = vpos + length
        if pos > end:
            raise _GiveUp
        if tag in _PIXEL_TAGS or (known_vr in _BULK_VRS and length > BULK_DATA_THRESHOLD):
            continue
        value = bytes(view[vpos:pos])
        decoded = _decode(known_vr, value)
        elements[tag] = decoded
        slow = slow or decoded is None
        raw = value if length else cast(bytes, empty_value_for_VR(vr, raw=True))
        plain.append((tag, vr, length, raw, vpos))
        if tag == _CHARSET:
            encodings = convert_encodings(_multi(raw or b""))
    if slow:
        for tag, vr, length, raw, vpos in plain:
            key = BaseTag(tag)
            raws[key] = RawDataElement(key, vr, length, raw, vpos, implicit, True)
    return _convert(elements, raws)


def _convert(
    elements: dict[int, tuple[Any, dict[str, Any]] | None],
    raws: dict[BaseTag, RawDataElement | DataElement],
) -> tuple[dict[int, Any], dict[Level, dict[str, Any]]]:
    values: dict[int, Any] = {}
    parts: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    ds: Dataset | None = None  # made for the elements pydicom converts, when there are some
    for tag, done in elements.items():
        if done is not None:
            values[tag], encoded = done
        else:
            if ds is None:
                ds = Dataset(raws)
            try:  # as ingest's pydicom path does: every element converted, items checked
                elem = ds[tag]
                if elem.VR == "SQ":
                    for item in elem.value:
                        check_complete(item)
            except Exception as exc:  # pydicom raises many types on odd values
                raise _GiveUp from exc
            values[tag] = elem.value
            try:
                encoded = element_json(elem)
            except Exception:  # as ingest: a value JSON cannot express stays in the blob
                continue
        parts[level_of(tag)][f"{tag:08X}"] = encoded
    return values, parts


def check_complete(ds: Dataset) -> None:
    """Every element holds as many bytes as its header announced (PS3.5 7.1).

    pydicom returns a short value at the end of the data without complaint, so a dataset
    cut short, or bytes that are not a dataset at all, would otherwise pass as one.

    Raises:
        InvalidInstance: an element is shorter than announced.
    """
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != _UNDEFINED:
            got = len(raw.value or b"")
            if got != raw.length:
                where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                raise InvalidInstance(
                    f"dataset does not parse: cut short in {where}: {got} of {raw.length} bytes",
                    InvalidKind.UNPARSABLE,
                )
        elem = ds[tag]  # converting now makes a broken value fail here, not halfway in
        if elem.VR == "SQ":
            for item in elem.value:
                check_complete(item)


def dictionary_vr(tag: int) -> str:
    """The dictionary's VR of ``tag``; UN for a private or unknown one."""
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown: implicit VR leaves it unknown (PS3.5 6.2.2)
        return "UN"


def _multi(raw: bytes) -> str | list[str]:
    items = raw.decode("latin-1").rstrip(" \x00").split("\\")
    return items[0] if len(items) == 1 else items


def _decode(vr: str, raw: bytes) -> tuple[Any, dict[str, Any]] | None:
    """An element's value and DICOM JSON, as pydicom's conversion and dicomjson.py's
    element_json give them, for ASCII text and binary numbers; None for anything else."""
    if vr in _NUMBERS:
        return _binary_numbers(vr, raw)
    if not raw.isascii() or b"\x1b" in raw:  # ISO 2022 escapes: pydicom decodes those
        return None
    text = raw.decode("ascii")
    if vr in _NUMBER_TEXT:
        return _number_text(vr, text)
    if vr in _MULTI:
        items = text.rstrip(" \x00").split("\\")
    elif vr in _TEXT:
        items = [v.rstrip("\x00 ") for v in text.split("\\")]
    elif vr in _SINGLE:
        items = [text.rstrip("\x00 ")]
    elif vr == "AE":
        items = [v.strip() for v in text.split("\\")]
    elif vr == "PN":
        items = text.rstrip("\x00 ").split("\\")
    else:
        return None
    if len(items) == 1:
        if not items[0]:
            return "", {"vr": vr}
        value: Any = items[0]
    else:
        value = items
    if vr == "PN":
        return value, {"vr": vr, "Value": [_pn(v) if v else None for v in items]}
    return value, {"vr": vr, "Value": items}


def _binary_numbers(vr: str, raw: bytes) -> tuple[Any, dict[str, Any]] | None:
    code = _NUMBERS[vr]
    size = struct.calcsize(code)
    if not raw or len(raw) % size:
        return None
    numbers = list(struct.unpack(f"<{len(raw) // size}{code}", raw))
    return (numbers[0] if len(numbers) == 1 else numbers), {"vr": vr, "Value": numbers}


def _number_text(vr: str, text: str) -> tuple[Any, dict[str, Any]] | None:
    # As pydicom's MultiString: padding off the end, one value per item, each as text without
    # its spaces; as its JSON: each item as a Python number.
    pattern, number = _NUMBER_TEXT[vr]
    text = text.rstrip(" \x00")
    if not text:
        return "", {"vr": vr}
    items = text.split("\\")
    if not all(len(v) <= 16 and pattern.fullmatch(v) for v in items):
        return None
    values = [v.strip() for v in items]
    return (values[0] if len(values) == 1 else values), {
        "vr": vr,
        "Value": [number(v) for v in values],
    }


def _pn(value: str) -> dict[str, str]:
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, value.split("="), strict=False) if group}
