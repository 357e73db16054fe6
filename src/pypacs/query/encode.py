"""A matched row → its C-FIND response identifier as bytes, without building a Dataset.

The bytes are the ones pydicom writes for ``respond.build_identifier``'s Dataset (a test
holds them equal, byte for byte): the same elements, in tag order (PS3.5 7.1), text padded
to even length (PS3.5 6.2: UI with NUL, the rest with a space), values in the response's
character set (PS3.5 6.1.2.3). Implicit and explicit VR little endian, the two syntaxes a
C-FIND context negotiates, are written here; any other syntax, and any value the fast path
does not know (binary VRs, inline binary, odd DICOM JSON), goes through pydicom.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydicom.charset import convert_encodings, encode_string, python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from pypacs.model.levels import Level
from pypacs.model.vr import TEXT_VRS, vr_of
from pypacs.query.respond import (
    INSTANCE_AVAILABILITY,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    ResponseContext,
    Row,
    build_identifier,
    declared_charset,
    element_text,
    returned_items,
)
from pypacs.query.to_sql import Compiled, column_key
from pypacs.query.types import Query

SPECIFIC_CHARACTER_SET = 0x00080005

# PS3.5 7.1.2: in explicit VR, these VRs have 2 reserved bytes and a 4-byte length.
LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
)
# PS3.5 6.2: every VR; an empty element of any of them is a header with length 0.
ALL_VRS = frozenset(
    {
        *TEXT_VRS,
        *LONG_LENGTH_VRS,
        *("AT", "FD", "FL", "SL", "SS", "UL", "US"),
    }
)
# PS3.5 6.1.2.3: Specific Character Set applies to the values of these VRs only; the others
# hold the default repertoire (written as ISO 8859-1, as pydicom does).
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
# PS3.5 6.2: one value each, in which a backslash is a character.
_ONE_VALUE_VRS = frozenset({"LT", "ST", "UT"})
_STRING_VRS = TEXT_VRS - {"IS", "DS", "PN"}
# Single-valued Specific Character Sets without code extensions (PS3.3 C.12.1.1.2): a value
# encodes as Python's codec writes it. Others (ISO 2022 escapes, JIS) go to pydicom.
_PLAIN_TERMS = frozenset(
    {
        "ISO_IR 100",
        "ISO_IR 101",
        "ISO_IR 109",
        "ISO_IR 110",
        "ISO_IR 126",
        "ISO_IR 127",
        "ISO_IR 138",
        "ISO_IR 144",
        "ISO_IR 148",
        "ISO_IR 166",
        "ISO_IR 192",
        "GB18030",
        "GBK",
    }
)
_DEFAULT_CODEC = "latin_1"  # pydicom writes the default repertoire as ISO 8859-1
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")  # PS3.18 F.2.2

# PS3.5 7.1.2 (explicit) and 7.1.3 (implicit) element headers; 7.5 item header.
_IMPLICIT = struct.Struct("<HHI")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xI")
_ITEM_GROUP, _ITEM_ELEMENT = 0xFFFE, 0xE000
_MAX_SHORT_LENGTH = 0xFFFF

# An element's value: text (joined values), sequence items, or a pydicom element.
Value: TypeAlias = "str | list[list[tuple[int, str, Value]]] | DataElement"


class _Fallback(Exception):
    """A value the fast path does not write; pydicom writes it."""


@dataclass(frozen=True)
class _Charset:
    """How text is written in one response (PS3.5 6.1.2.3)."""

    terms: tuple[str, ...]  # the declared Specific Character Set; () when none
    plain: str | None  # the codec, when one without code extensions serves every value
    codecs: tuple[str, ...]  # pydicom's encodings, for everything else

    @classmethod
    def of(cls, terms: list[str] | None) -> _Charset:
        if not terms:
            return _ASCII
        plain = python_encoding[terms[0]] if len(terms) == 1 and terms[0] in _PLAIN_TERMS else None
        return cls(tuple(terms), plain, tuple(convert_encodings(terms)))

    def text(self, vr: str, text: str) -> bytes:
        """The encoded value of a text element (values joined by backslashes)."""
        if vr not in CHARSET_VRS:
            return text.encode(_DEFAULT_CODEC)
        if self.plain is not None:
            try:
                return (_pn_trimmed(text) if vr == "PN" else text).encode(self.plain)
            except UnicodeError:
                pass  # pydicom decides: replacement characters and a warning
        codecs = list(self.codecs)
        if vr == "PN":
            return b"\\".join(PersonName(v).encode(codecs) for v in text.split("\\"))
        values = [text] if vr in _ONE_VALUE_VRS else text.split("\\")
        return b"\\".join(encode_string(v, codecs) for v in values)


_ASCII = _Charset((), _DEFAULT_CODEC, ())


def _pn_trimmed(text: str) -> str:
    """PS3.5 6.2.1: trailing empty component groups (and their "=") are not written."""
    if "=" not in text:
        return text
    out = []
    for value in text.split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        out.append("=".join(groups))
    return "\\".join(out)


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _IMPLICIT.pack(group, element, length)
    if vr in LONG_LENGTH_VRS:
        return _LONG.pack(group, element, vr.encode(), length)
    if length > _MAX_SHORT_LENGTH:
        # PS3.5 6.2.2 note: a value too long for a 2-byte length is sent as UN.
        return _LONG.pack(group, element, b"UN", length)
    return _SHORT.pack(group, element, vr.encode(), length)


def _skipped(tag: int) -> bool:
    # PS3.5 7.2: group lengths (other than the command and file meta groups) are not written.
    return tag & 0xFFFF == 0 and tag >> 16 > 6


def _element(tag: int, vr: str, value: Value, charset: _Charset, implicit: bool) -> bytes:
    if isinstance(value, str):
        raw = charset.text(vr, value) if value else b""
        if len(raw) & 1:
            raw += b"\0" if vr == "UI" else b" "
        return _header(tag, vr, len(raw), implicit) + raw
    if isinstance(value, list):
        # PS3.5 7.5.1: sequences and items of defined length (a reader can skip them whole).
        body = b"".join(_item(item, charset, implicit) for item in value)
        return _header(tag, "SQ", len(body), implicit) + body
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_data_element(fp, value, list(charset.terms) or None)
    return bytes(fp.getvalue())


def _item(elements: list[tuple[int, str, Value]], charset: _Charset, implicit: bool) -> bytes:
    body = b"".join(
        _element(tag, vr, value, charset, implicit)
        for tag, vr, value in sorted(elements, key=_first)
        if not _skipped(tag)
    )
    return _IMPLICIT.pack(_ITEM_GROUP, _ITEM_ELEMENT, len(body)) + body


def _first(entry: tuple[int, str, Value]) -> int:
    return entry[0]


def _pn_value(value: Any) -> str:
    # PS3.18 F.2.2: the groups present, joined by "=" (the writer drops trailing empties).
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise _Fallback
    count = 3 if "Phonetic" in value else 2 if "Ideographic" in value else 1
    groups = [value.get(name, "") for name in _PN_GROUPS[:count]]
    if not all(isinstance(g, str) for g in groups):
        raise _Fallback
    return "=".join(groups)


def _is_value(value: Any) -> str:
    # PS3.18 F.2.3: IS values are JSON numbers; pydicom reads each as an int.
    if value is None:
        raise _Fallback
    try:
        return str(int(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Fallback from exc


def _ds_value(value: Any) -> str:
    # PS3.18 F.2.3: DS values are JSON numbers; pydicom reads each as a float.
    if value is None:
        raise _Fallback
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise _Fallback from exc
    if not math.isfinite(number):
        raise _Fallback
    return repr(number)


def _string_value(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Fallback
    return value


def _uid_text(text: str) -> str:
    # pydicom strips whitespace around each UID (PS3.5 9.1: a UID holds none).
    return "\\".join([v.strip() for v in text.split("\\")])


def _uid_value(value: Any) -> str:
    return _uid_text(_string_value(value))


_CONVERTERS: dict[str, Callable[[Any], str]] = {
    **dict.fromkeys(_STRING_VRS, _string_value),
    "PN": _pn_value,
    "IS": _is_value,
    "DS": _ds_value,
    "UI": _uid_value,
}


def _json_value(vr: str, element: dict[str, Any], odd: list[str]) -> Value:
    """A DICOM JSON element's value (PS3.18 F.2); non-ASCII texts are added to ``odd``."""
    values = element.get("Value")
    if values is None:
        if len(element) > 1 or vr not in ALL_VRS:  # InlineBinary, BulkDataURI, other keys
            raise _Fallback
        return [] if vr == "SQ" else ""
    if not isinstance(values, list):
        raise _Fallback
    if vr == "SQ":
        return [_json_item(item, odd) for item in values]
    converter = _CONVERTERS.get(vr)
    if converter is None or (vr in _ONE_VALUE_VRS and len(values) > 1):
        raise _Fallback  # several values of a one-value VR: pydicom encodes each apart
    if not values:
        return ""
    text = "\\".join([converter(v) for v in values])
    if len(values) > 1 and text.count("\\") != len(values) - 1:
        raise _Fallback  # a backslash inside one of several values: pydicom keeps it there
    if not text.isascii():
        odd.append(text)
    return text


def _json_item(item: Any, odd: list[str]) -> list[tuple[int, str, Value]]:
    if not isinstance(item, dict) or f"{SPECIFIC_CHARACTER_SET:08X}" in item:
        raise _Fallback  # an item's own character set: pydicom writes it
    out: list[tuple[int, str, Value]] = []
    for key, element in item.items():
        vr = element.get("vr") if isinstance(element, dict) else None
        if not isinstance(vr, str):
            raise _Fallback
        try:
            tag = int(key, 16)
        except ValueError as exc:
            raise _Fallback from exc
        out.append((tag, vr, _json_value(vr, element, odd)))
    return out


def _raw_texts(elem: DataElement) -> list[str]:
    """An element's texts as respond's character set choice reads them."""
    if elem.VR == "SQ":
        return [t for item in elem.value for e in item for t in _raw_texts(e)]
    if elem.VR in TEXT_VRS and elem.value is not None:
        return [element_text(elem.value)]
    return []


def _stored(tag: int, element: dict[str, Any], odd: list[str]) -> tuple[str, Value]:
    vr = element.get("vr")
    if isinstance(vr, str):
        try:
            return vr, _json_value(vr, element, odd)
        except _Fallback:
            pass
    elem = Dataset.from_json({f"{tag:08X}": element})[tag]
    odd.extend(t for t in _raw_texts(elem) if not t.isascii())
    return str(elem.VR), elem


def _empty(tag: int) -> tuple[str, Value]:
    vr = vr_of(tag)
    if vr not in ALL_VRS:
        return vr, DataElement(tag, vr, None)
    return vr, [] if vr == "SQ" else ""


@dataclass(frozen=True)
class _Plan:
    """Where each return key of a query comes from, decided once per compiled statement."""

    compiled: Compiled
    constants: tuple[tuple[int, str, str], ...]  # RetrieveAETitle, InstanceAvailability
    columns: tuple[tuple[int, str, Level, str], ...]  # (tag, vr, level, column)
    stored: tuple[tuple[int, Level], ...]  # read from the attribute set (DICOM JSON)
    empty: tuple[int, ...]  # of a level the statement does not join


def _plan(query: Query, compiled: Compiled, context: ResponseContext) -> _Plan:
    # The same decisions as respond.build_identifier, in the same order.
    constants: list[tuple[int, str, str]] = []
    columns: list[tuple[int, str, Level, str]] = []
    stored: list[tuple[int, Level]] = []
    empty: list[int] = []
    for tag, level in query.return_tags:
        key = column_key(tag)
        if tag == RETRIEVE_AE_TITLE:
            constants.append((tag, "AE", context.ae_title))
        elif tag == INSTANCE_AVAILABILITY:
            constants.append((tag, "CS", "ONLINE"))
        elif level not in compiled.levels:
            empty.append(tag)
        elif key is not None and (key.derived or level not in compiled.attrs):
            columns.append((tag, key.vr, level, str(key.column)))
        else:
            stored.append((tag, level))
    return _Plan(compiled, tuple(constants), tuple(columns), tuple(stored), tuple(empty))


def _column_text(value: Any) -> str:
    return "" if value is None or value == "" else str(value)


class IdentifierEncoder:
    """Encodes the response identifier of each match of one query in one transfer syntax.

    Raises:
        ValueError: ``transfer_syntax`` is not a transfer syntax.
    """

    def __init__(self, query: Query, context: ResponseContext, transfer_syntax: str) -> None:
        syntax = UID(transfer_syntax)
        if not syntax.is_transfer_syntax:
            raise ValueError(f"not a transfer syntax: {transfer_syntax}")
        self._query = query
        self._context = context
        self._implicit = syntax.is_implicit_VR
        self._little = syntax.is_little_endian
        self._deflated = syntax.is_deflated
        self._fast = self._little and not self._deflated
        self._plan: _Plan | None = None

    def __call__(self, compiled: Compiled, row: Row) -> bytes:
        """The identifier of ``row`` (PS3.4 C.4.1.1.3.2), encoded."""
        if not self._fast:
            return self._by_pydicom(compiled, row)
        plan = self._plan
        if plan is None or plan.compiled is not compiled:
            plan = self._plan = _plan(self._query, compiled, self._context)
        odd: list[str] = []
        values: dict[int, tuple[str, Value]] = {}
        for tag, vr, text in plan.constants:
            values[tag] = (vr, text)
            if not text.isascii():
                odd.append(text)
        for tag, vr, level, column in plan.columns:
            text = _column_text(row.column(level, column))
            if vr == "UI" and text:
                text = _uid_text(text)
            values[tag] = (vr, text)
            if not text.isascii():
                odd.append(text)
        empty = list(plan.empty)
        for tag, level in plan.stored:
            element = row.element(tag, level)
            if element is None:
                empty.append(tag)
            else:
                values[tag] = _stored(tag, returned_items(self._query, tag, element), odd)
        for tag in empty:
            values[tag] = _empty(tag)
        values[QUERY_RETRIEVE_LEVEL] = ("CS", self._query.level.value)
        terms = declared_charset(odd, self._query.charset)
        charset = _Charset.of(terms)
        if terms is not None:
            values[SPECIFIC_CHARACTER_SET] = ("CS", "\\".join(terms))
        implicit = self._implicit
        return b"".join(
            [
                _element(tag, values[tag][0], values[tag][1], charset, implicit)
                for tag in sorted(values)
                if not _skipped(tag)
            ]
        )

    def _by_pydicom(self, compiled: Compiled, row: Row) -> bytes:
        ds = build_identifier(self._query, compiled, row, self._context)
        fp = DicomBytesIO()
        fp.is_little_endian = self._little
        fp.is_implicit_VR = self._implicit
        write_dataset(fp, ds)
        data = bytes(fp.getvalue())
        if self._deflated:
            # PS3.5 A.5: the explicit VR little endian encoding, deflated (RFC 1951, no header).
            packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = packer.compress(data) + packer.flush()
        return data
