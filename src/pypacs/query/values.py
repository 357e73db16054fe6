"""Parsing and normalising key values: dates, times, UIDs (PS3.5 6.2, PS3.4 C.2.2.2.5)."""

from __future__ import annotations

import re

from pypacs.model.uid import is_acceptable_uid
from pypacs.model.vr import normalise_datetime, normalise_time
from pypacs.query.types import InvalidQuery

_DA = re.compile(r"^\d{8}$")
_IS = re.compile(r"^[+-]?[0-9]{1,12}$")
# PS3.5 6.2, IS: at most 12 characters, a value from -2**31 to 2**31 - 1.
IS_RANGE = (-(2**31), 2**31 - 1)


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def check_uid(value: str, tag: int) -> str:
    """A UID by the rule of every door (model/uid.py: liberal where devices break 9.1)."""
    if not is_acceptable_uid(value):
        raise InvalidQuery(f"{_tag(tag)} is not a UID: {value!r}", tag)
    return value


def integer_string(value: str, tag: int) -> str:
    """An IS value in its canonical form (no sign or leading zeros to tell apart).

    Raises:
        InvalidQuery: not a decimal integer within the range of IS.
    """
    if not _IS.match(value) or not IS_RANGE[0] <= int(value) <= IS_RANGE[1]:
        raise InvalidQuery(
            f"{_tag(tag)} is not an Integer String from {IS_RANGE[0]} to {IS_RANGE[1]}: "
            f"{_shown(value)}",
            tag,
        )
    return str(int(value))


def _shown(value: str, most: int = 24) -> str:
    """A value quoted for a message, cut short when long."""
    return repr(value) if len(value) <= most else repr(value[:most]) + "..."


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
