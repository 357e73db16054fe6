"""Parsing and normalising key values: dates, times, UIDs (PS3.5 6.2, PS3.4 C.2.2.2.5)."""

from __future__ import annotations

import re

from pypacs.model.uid import is_acceptable_uid
from pypacs.model.vr import normalise_datetime, normalise_time
from pypacs.query.types import InvalidQuery

_DA = re.compile(r"^\d{8}$")


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def check_uid(value: str, tag: int) -> str:
    """A UID by the rule of every door (model/uid.py: liberal where devices break 9.1)."""
    if not is_acceptable_uid(value):
        raise InvalidQuery(f"{_tag(tag)} is not a UID: {value!r}", tag)
    return value


def date(value: str, tag: int) -> str:
    if not _DA.match(value):
        raise InvalidQuery(f"{_tag(tag)} is not a date: {value!r}", tag)
    return value


def time(value: str, tag: int, *, upper: bool) -> str:
    """Normalise a TM to HHMMSS.FFFFFF; a partial upper bound covers its whole unit."""
    try:
        return normalise_time(value, upper=upper)
    except ValueError:
        raise InvalidQuery(f"{_tag(tag)} is not a time: {value!r}", tag) from None


def datetime(value: str, tag: int, *, upper: bool) -> str:
    """Normalise a DT (without offset) to YYYYMMDDHHMMSS.FFFFFF for comparisons."""
    try:
        return normalise_datetime(value, upper=upper)
    except ValueError:
        raise InvalidQuery(f"{_tag(tag)} is not a date-time: {value!r}", tag) from None
