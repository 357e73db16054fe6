"""The same matching semantics in Python, over stored attributes (DICOM JSON).

Used for keys without an indexed column (sequences, private and other attributes), for
person names with several component groups, and by the property test that checks this
path and the SQL path agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pypacs.model.vr import (
    NUMBER_VRS,
    normalise,
    normalise_datetime,
    normalise_time,
    pn_groups,
    pn_normal,
)
from pypacs.query.types import CombinedDateTime, Exact, Match, Pattern, Range, Term

# Reads an attribute of a level as DICOM JSON ({"vr": ..., "Value": [...]}) or None.
Getter = Callable[[Match], dict[str, Any] | None]


@lru_cache(maxsize=1024)
def _regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if case_insensitive else 0))


def _pn_text(value: Any) -> str:
    if isinstance(value, dict):
        return "=".join(
            value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")
        ).rstrip("=")
    return str(value)


def stored_values(element: dict[str, Any] | None) -> list[str]:
    """The values of a DICOM JSON element as strings, in the form matching compares."""
    if not element:
        return []
    vr = element.get("vr", "")
    raw = element.get("Value") or []
    if vr == "PN":
        return [_pn_text(v) for v in raw if v is not None]
    return [normalise(str(v), vr) for v in raw if v is not None and str(v) != ""]


def _text_match(term: Term, stored: str, match: Match) -> bool:
    ci = match.case_insensitive
    if isinstance(term, Exact):
        if match.vr in NUMBER_VRS:
            try:
                return float(term.value) == float(stored)
            except ValueError:
                return term.value == stored
        return term.value.upper() == stored.upper() if ci else term.value == stored
    if isinstance(term, Pattern):
        return _regex(term.pattern, ci).fullmatch(stored) is not None
    return False


def _pn_match(term: Term, stored: str, match: Match) -> bool:
    # Each component group given in the key must match the stored group (PS3.5 6.2.1).
    query = (
        term.value if isinstance(term, Exact) else term.pattern if isinstance(term, Pattern) else ""
    )
    for q, s in zip(pn_groups(query), pn_groups(stored), strict=True):
        q, s = pn_normal(q), pn_normal(s)
        if not q:
            continue
        sub = Exact(q) if isinstance(term, Exact) else Pattern(q)
        if not _text_match(sub, s, match):
            return False
    return True


def _range_match(term: Range, stored: str, vr: str) -> bool:
    try:
        if vr == "TM":
            value = normalise_time(stored)
        elif vr == "DT":
            value = normalise_datetime(stored)
        else:
            value = stored
    except ValueError:
        return False
    return (term.low is None or value >= term.low) and (term.high is None or value <= term.high)


def term_matches(term: Term, stored: str, match: Match) -> bool:
    if isinstance(term, Range):
        return _range_match(term, stored, match.vr)
    if match.vr == "PN":
        return _pn_match(term, stored, match)
    return _text_match(term, stored, match)


def item_matches(item: dict[str, Any], keys: tuple[Match, ...]) -> bool:
    """Whether one stored sequence item (DICOM JSON) satisfies every key of a query item."""
    return all(matches(key, item.get(f"{key.tag:08X}")) for key in keys)


def matches(match: Match, element: dict[str, Any] | None) -> bool:
    """Whether a stored element satisfies a key (PS3.4 C.2.2.2)."""
    if match.nothing:
        return False
    if match.universal:
        return True
    if match.items:
        # C.2.2.2.6: some item of the stored sequence matches every key of the query item.
        items = (element or {}).get("Value") or []
        return any(item_matches(item, match.items) for item in items)
    values = stored_values(element)
    # C.2.2.2.8: any query value against any stored value.
    return any(term_matches(t, v, match) for t in match.terms for v in values)


def combined_matches(combined: CombinedDateTime, date: str | None, time: str | None) -> bool:
    """C.2.2.2.5.1: StudyDate and StudyTime read together as one date-time."""
    if not date:
        return False
    try:
        value = date + normalise_time(time or "000000")
    except ValueError:
        return False
    return (combined.low is None or value >= combined.low) and (
        combined.high is None or value <= combined.high
    )
