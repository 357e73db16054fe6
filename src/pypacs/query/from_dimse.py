"""A C-FIND (or C-GET/C-MOVE) identifier → Query, validated against the model (PS3.4 C.4.1)."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pypacs.model.attributes import level_of
from pypacs.model.keys import key_for_tag, unique_key
from pypacs.model.levels import InformationModel, Level
from pypacs.model.vr import RANGE_VRS, SINGLE_TEXT_VRS, WILDCARD_VRS, normalise, vr_of
from pypacs.query import values
from pypacs.query.types import (
    CombinedDateTime,
    Exact,
    InvalidQuery,
    Match,
    Pattern,
    Query,
    QueryOptions,
    Range,
    Term,
)

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY = 0x00080054, 0x00080056
_ANSWERED = (RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY)
_NOT_KEYS = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, *_ANSWERED})
STUDY_DATE, STUDY_TIME = 0x00080020, 0x00080030


def key_level(tag: int) -> Level:
    """The level whose table holds an attribute."""
    key = key_for_tag(tag)
    return key.level if key is not None else level_of(tag)


def _texts(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    text = str(value)
    if elem.VR in SINGLE_TEXT_VRS:
        return [text]
    return text.split("\\")


def _term(tag: int, vr: str, raw: str) -> Term | None:
    """One value of a key → a term; ``None`` when the value matches everything."""
    value = normalise(raw, vr)
    if value == "":
        return None
    if vr == "UI":
        # PS3.4 C.2.2.2.4: no wildcards for UIDs; each value of a list is exact (C.2.2.2.2).
        return Exact(values.check_uid(value, tag))
    if vr == "IS" and value.lstrip("+-").isdigit():
        return Exact(values.integer_string(value, tag))  # by value: "02" is 2
    if vr in RANGE_VRS:
        return _range_or_exact(tag, vr, value)
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        if set(value) == {"*"}:
            return None  # C.2.2.2.4: a lone "*" is universal matching
        return Pattern(value)
    return Exact(value)


def _range_or_exact(tag: int, vr: str, value: str) -> Term:
    def parse(v: str, up: bool) -> str:
        if vr == "DA":
            return values.date(v, tag)
        if vr == "TM":
            return values.time(v, tag, upper=up)
        return values.datetime(v, tag, upper=up)

    if "-" in value and not (vr == "DT" and value.count("-") == 1 and _is_offset(value)):
        low, _, high = value.partition("-")
        if not low and not high:
            raise InvalidQuery(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) range has no bounds", tag)
        return Range(parse(low, False) if low else None, parse(high, True) if high else None)
    if vr == "DA":
        return Exact(parse(value, False))
    # A single time or date-time is the range of its whole unit (10 = 10:00-10:59:59.999999).
    return Range(parse(value, False), parse(value, True))


def _is_offset(value: str) -> bool:
    head, _, tail = value.partition("-")
    return len(tail) == 4 and tail.isdigit() and len(head) >= 4


def parse_match(elem: DataElement, level: Level, options: QueryOptions) -> Match:
    """One element of an identifier → its Match.

    Raises:
        InvalidQuery: a value the VR does not allow.
    """
    tag = int(elem.tag)
    vr = elem.VR if elem.VR not in ("UN", None) else vr_of(tag)
    if vr == "SQ":
        items = elem.value if isinstance(elem.value, Sequence) else []
        # C.2.2.2.6: an empty sequence or item is universal; one item's keys must all match.
        if len(items) > 1:
            raise InvalidQuery("a sequence key holds at most one item (PS3.4 C.2.2.2.6)", tag)
        item_matches = tuple(
            parse_match(e, level, options) for item in items for e in item if e.tag != 0xFFFEE000
        )
        return Match(
            tag,
            vr,
            level,
            items=tuple(m for m in item_matches if not m.universal),
            item_tags=tuple(m.tag for m in item_matches),
        )
    given = _texts(elem)
    # An empty value among several matches nothing by itself (an empty UID is no UID,
    # C.2.2.2.2); only a wholly empty key, or a lone "*", is universal.
    texts = [t for t in given if normalise(t, vr)] if len(given) > 1 else given
    if len(given) > 1 and not texts:
        # PS3.5 6.4: a backslash separates values, so a lone backslash is two empty values; each
        # matches nothing (C.2.2.2.8 matches value by value), so the key matches nothing.
        return Match(tag, vr, level, nothing=True)
    terms = tuple(t for t in (_term(tag, vr, raw) for raw in texts) if t is not None)
    if len(terms) < len(texts):
        terms = ()  # a lone "*" among the values makes the whole key universal
    return Match(tag, vr, level, terms, case_insensitive=vr == "PN" and options.pn_case_insensitive)


def parse_level(identifier: Dataset, model: InformationModel) -> Level:
    elem = identifier.get(QUERY_RETRIEVE_LEVEL)
    if elem is None or not str(elem.value or "").strip():
        raise InvalidQuery("QueryRetrieveLevel (0008,0052) is missing", QUERY_RETRIEVE_LEVEL)
    text = str(elem.value).strip()
    try:
        level = Level(text)
    except ValueError:
        raise InvalidQuery(
            f"QueryRetrieveLevel {text!r} is not a level", QUERY_RETRIEVE_LEVEL
        ) from None
    if level not in model.levels:
        raise InvalidQuery(
            f"QueryRetrieveLevel {text} is not part of the {model.value} model",
            QUERY_RETRIEVE_LEVEL,
        )
    return level


def _require_unique_keys_above(
    level: Level, model: InformationModel, matches: dict[int, Match]
) -> None:
    # PS3.4 C.4.1.2.1: a hierarchical query names one entity at each level above its own
    # by that level's unique key, a single value (no list, wildcard or range).
    for above in model.levels[: model.levels.index(level)]:
        key = unique_key(above)
        match = matches.get(key.tag)
        if match is None or len(match.terms) != 1 or not isinstance(match.terms[0], Exact):
            raise InvalidQuery(
                f"{key.keyword} must be a single value in a hierarchical {level.value} query",
                key.tag,
            )


def _elements(identifier: Dataset) -> Iterable[DataElement]:
    for elem in identifier:
        tag = int(elem.tag)
        if tag >> 16 in (0x0000, 0x0002) or tag in _NOT_KEYS or elem.tag.is_private_creator:
            continue
        yield elem


def parse_identifier(identifier: Dataset, model: InformationModel, options: QueryOptions) -> Query:
    """Turn a C-FIND identifier into a Query.

    Raises:
        InvalidQuery: the identifier breaks a rule of PS3.4 C.4.1.1.3 or C.2.2.2.
    """
    level = parse_level(identifier, model)
    allowed = model.levels[: model.levels.index(level) + 1]
    matches: dict[int, Match] = {}
    sequences: list[Match] = []
    return_tags: list[tuple[int, Level]] = []
    for elem in _elements(identifier):
        tag = int(elem.tag)
        stored_at = key_level(tag)
        return_tags.append((tag, stored_at))
        # Keys below the query level take no part in matching; they come back empty.
        in_model = stored_at in allowed or (
            stored_at is Level.PATIENT and model is InformationModel.STUDY_ROOT
        )
        if not in_model:
            continue
        match = parse_match(elem, stored_at, options)
        if match.item_tags:
            sequences.append(match)
        if not match.universal:
            matches[tag] = match
    # Not keys, but return keys when asked (PS3.4 C.4.1.1.3.2; answered by respond.py).
    return_tags += [(tag, level) for tag in _ANSWERED if tag in identifier]
    if not options.relational:
        _require_unique_keys_above(level, model, matches)
    # The query level's unique key and those above are always returned (C.4.1.1.3.2).
    for above in allowed:
        if model is InformationModel.STUDY_ROOT and above is Level.PATIENT:
            continue
        tag = unique_key(above).tag
        if all(t != tag for t, _ in return_tags):
            return_tags.append((tag, above))
    combined = _combined(matches, options)
    charset = identifier.get(SPECIFIC_CHARACTER_SET)
    return Query(
        level=level,
        model=model,
        matches=tuple(matches.values()),
        return_tags=tuple(return_tags),
        combined=combined,
        charset=tuple(_texts(charset)) if charset is not None else (),
        max_results=options.max_results,
        sequences=tuple(sequences),
    )


def _combined(matches: dict[int, Match], options: QueryOptions) -> CombinedDateTime | None:
    # PS3.4 C.2.2.2.5.1: with combined date-time matching negotiated, a StudyDate range and
    # a StudyTime range together are one date-time range.
    if not options.combined_datetime:
        return None
    date, time = matches.get(STUDY_DATE), matches.get(STUDY_TIME)
    if date is None or time is None or len(date.terms) != 1 or len(time.terms) != 1:
        return None
    d, t = date.terms[0], time.terms[0]
    d_low, d_high = (
        (d.value, d.value)
        if isinstance(d, Exact)
        else ((d.low, d.high) if isinstance(d, Range) else (None, None))
    )
    if not isinstance(t, Range):
        return None
    del matches[STUDY_DATE], matches[STUDY_TIME]
    low = d_low + (t.low or "000000.000000") if d_low else None
    high = d_high + (t.high or "235959.999999") if d_high else None
    return CombinedDateTime(STUDY_DATE, STUDY_TIME, low, high)


def parse_retrieve(identifier: Dataset, model: InformationModel, *, relational: bool) -> Query:
    """Turn a C-MOVE or C-GET identifier into a Query naming the entities to retrieve.

    PS3.4 C.4.2.2.1 / C.4.3.2.1: the unique key of the retrieve level holds one or more
    values (a list of UIDs at STUDY, SERIES and IMAGE); each level above is named by its
    unique key with a single value, unless relational-retrieve was negotiated
    (C.4.2.2.2), which lets those keys be left out. Other keys select nothing and are
    ignored (SCUs often reuse a C-FIND identifier).

    Raises:
        InvalidQuery: the level is missing or not in the model, the retrieve level's
            unique key is missing or empty, a unique key holds a wildcard, range or
            malformed UID.
    """
    level = parse_level(identifier, model)
    allowed = model.levels[: model.levels.index(level) + 1]
    unique = {unique_key(lvl).tag: lvl for lvl in allowed}
    options = QueryOptions(pn_case_insensitive=False)
    matches: dict[int, Match] = {}
    for elem in _elements(identifier):
        tag = int(elem.tag)
        if tag not in unique:
            continue
        match = parse_match(elem, unique[tag], options)
        if match.universal:
            continue
        if not all(isinstance(term, Exact) for term in match.terms):
            raise InvalidQuery(
                f"{unique_key(unique[tag]).keyword} in a retrieve takes exact values only", tag
            )
        matches[tag] = match
    own = unique_key(level)
    if own.tag not in matches:
        raise InvalidQuery(
            f"{own.keyword} must name what to retrieve at the {level.value} level", own.tag
        )
    if not relational:
        _require_unique_keys_above(level, model, matches)
    return Query(level=level, model=model, matches=tuple(matches.values()))
