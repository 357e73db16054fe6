"""A matched row → the response identifier: every requested key, zero-length when unknown."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pypacs.model.keys import Key
from pypacs.model.levels import Level
from pypacs.model.vr import TEXT_VRS, vr_of
from pypacs.query.residual import combined_matches, item_matches, matches
from pypacs.query.to_sql import Compiled, column_key, label
from pypacs.query.types import Match, Query

QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056


@dataclass(frozen=True)
class ResponseContext:
    """What a response needs beyond the row: our AE title (RetrieveAETitle)."""

    ae_title: str = "PYPACS"


class Row:
    """One result row: column values and, where selected, decoded attribute sets."""

    def __init__(self, compiled: Compiled, mapping: Mapping[str, Any]) -> None:
        self._compiled = compiled
        self._map = mapping
        self._attrs: dict[Level, dict[str, Any]] = {}

    def column(self, level: Level, column: str) -> Any:
        return self._map.get(label(level, column))

    def attrs(self, level: Level) -> dict[str, Any]:
        if level not in self._attrs:
            raw = self._map.get(label(level, "attrs"))
            self._attrs[level] = json.loads(zlib.decompress(raw)) if raw else {}
        return self._attrs[level]

    def element(self, tag: int, level: Level) -> dict[str, Any] | None:
        """An attribute as DICOM JSON, from the attribute set when selected, else the column."""
        key = column_key(tag)
        if level in self._compiled.attrs and (key is None or not key.derived):
            found = self.attrs(level).get(f"{tag:08X}")
            if found is not None or key is None:
                return found
        if key is not None:
            return _from_column(key, self.column(level, str(key.column)))
        return None

    def match(self, m: Match) -> dict[str, Any] | None:
        return self.element(m.tag, m.level)


def _from_column(key: Key, value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return {"vr": key.vr}
    if key.vr == "PN":
        groups = str(value).split("=")
        names = ("Alphabetic", "Ideographic", "Phonetic")
        return {"vr": "PN", "Value": [{n: g for n, g in zip(names, groups, strict=False) if g}]}
    if key.vr == "IS":
        return {
            "vr": "IS",
            "Value": [int(value)] if str(value).lstrip("-").isdigit() else [str(value)],
        }
    return {"vr": key.vr, "Value": str(value).split("\\")}


def passes_residual(compiled: Compiled, row: Row) -> bool:
    if not all(matches(m, row.match(m)) for m in compiled.residual):
        return False
    c = compiled.combined_residual
    if c is None:
        return True
    return combined_matches(
        c, row.column(Level.STUDY, "study_date"), row.column(Level.STUDY, "study_time")
    )


def element_text(value: Any) -> str:
    """An element's text as it goes on the wire: its values joined by backslashes."""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _texts(ds: Dataset) -> Iterator[str]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _texts(item)
        elif elem.VR in TEXT_VRS and elem.value is not None:
            yield element_text(elem.value)


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _charset(ds: Dataset, requested: tuple[str, ...]) -> list[str] | None:
    return declared_charset(_texts(ds), requested)


def declared_charset(texts: Iterable[str], requested: tuple[str, ...]) -> list[str] | None:
    """PS3.5 6.1.2.3: declare a character set when a value is not ASCII: the request's own
    when it can hold every value, else UTF-8 (ISO_IR 192), which holds them all."""
    odd = [t for t in texts if not t.isascii()]
    if not odd:
        return None
    if requested:
        encodings = [python_encoding.get(term.strip() or "ISO_IR 6") for term in requested]
        usable = [e for e in encodings if e]
        if usable and all(any(_encodes(t, e) for e in usable) for t in odd):
            return list(requested)
    return ["ISO_IR 192"]


def returned_items(query: Query, tag: int, element: dict[str, Any]) -> dict[str, Any]:
    """PS3.4 C.2.2.2.6: of a sequence key with an item, only the matching items come back,
    each with only the keys the request's item named (zero-length where absent)."""
    for match in query.sequences:
        if match.tag != tag:
            continue
        items = [i for i in element.get("Value") or [] if item_matches(i, match.items)]
        keys = [f"{t:08X}" for t in match.item_tags]
        kept = [{k: item.get(k) or {"vr": vr_of(int(k, 16))} for k in keys} for item in items]
        return {"vr": "SQ", "Value": kept}
    return element


def _add_column_value(ds: Dataset, key: Key, value: Any) -> None:
    """A column value straight into the response (no JSON round trip on the common path)."""
    if value is None or value == "":
        ds.add_new(key.tag, key.vr, None)
    else:
        ds.add_new(key.tag, key.vr, value if isinstance(value, int) else str(value))


def _stored_json(
    query: Query, compiled: Compiled, row: Row, tag: int, level: Level
) -> dict[str, Any] | None:
    """One requested key of a match as DICOM JSON; ``None`` when nothing is stored."""
    key = column_key(tag)
    if key is not None and (key.derived or level not in compiled.attrs):
        return _from_column(key, row.column(level, str(key.column)))
    element = row.element(tag, level)
    return None if element is None else returned_items(query, tag, element)


def build_json(
    query: Query, compiled: Compiled, row: Row, context: ResponseContext
) -> dict[str, Any]:
    """The DICOM JSON object (PS3.18 F.2) of one match: the keys ``build_identifier``
    returns, or with ``include_all`` every stored attribute of the joined levels too,
    without building a Dataset in between."""
    found: dict[str, Any] = {}
    if query.include_all:
        for level in compiled.levels:
            found.update(row.attrs(level))
    for tag, level in query.return_tags:
        if tag == RETRIEVE_AE_TITLE:
            element: dict[str, Any] | None = {"vr": "AE", "Value": [context.ae_title]}
        elif tag == INSTANCE_AVAILABILITY:
            element = {"vr": "CS", "Value": ["ONLINE"]}
        elif level in compiled.levels:
            element = _stored_json(query, compiled, row, tag, level)
        else:
            element = None
        found[f"{tag:08X}"] = element or {"vr": vr_of(tag)}
    found.pop(f"{QUERY_RETRIEVE_LEVEL:08X}", None)
    return dict(sorted(found.items()))


def build_identifier(
    query: Query, compiled: Compiled, row: Row, context: ResponseContext
) -> Dataset:
    """The response identifier of one match (PS3.4 C.4.1.1.3.2)."""
    found: dict[str, Any] = {}
    empty: list[int] = []
    ds = Dataset()
    for tag, level in query.return_tags:
        if tag == RETRIEVE_AE_TITLE:
            ds.add_new(tag, "AE", context.ae_title)
            continue
        if tag == INSTANCE_AVAILABILITY:
            ds.add_new(tag, "CS", "ONLINE")
            continue
        if level not in compiled.levels:
            empty.append(tag)
            continue
        key = column_key(tag)
        if key is not None and (key.derived or level not in compiled.attrs):
            _add_column_value(ds, key, row.column(level, str(key.column)))
            continue
        element = row.element(tag, level)
        if element is None:
            empty.append(tag)
        else:
            found[f"{tag:08X}"] = returned_items(query, tag, element)
    if found:
        ds.update(Dataset.from_json(found))
    for tag in empty:
        vr = vr_of(tag)
        ds.add_new(tag, vr, Sequence() if vr == "SQ" else None)
    ds.QueryRetrieveLevel = query.level.value
    charset = _charset(ds, query.charset)
    if charset is not None:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    return ds
