"""The typed query: one Match per key, each a disjunction of terms (PS3.4 C.2.2.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The parsers' errors live with the others, so that the status tables can name them.
from pypacs.errors import InvalidQuery as InvalidQuery
from pypacs.errors import TooManyMatches as TooManyMatches
from pypacs.model.levels import InformationModel, Level


@dataclass(frozen=True)
class Exact:
    """Single value matching (C.2.2.2.1); also each value of a UID list (C.2.2.2.2)."""

    value: str


@dataclass(frozen=True)
class Pattern:
    """Wildcard matching (C.2.2.2.4): ``*`` any run, ``?`` one character."""

    pattern: str


@dataclass(frozen=True)
class Range:
    """Range matching (C.2.2.2.5) on normalised values; ``None`` is an open end."""

    low: str | None
    high: str | None


Term = Exact | Pattern | Range


@dataclass(frozen=True)
class Match:
    """One key: matches when any term matches (C.2.2.2.8 multiple value matching).

    No terms is universal matching (C.2.2.2.3). ``items`` holds the item keys of a
    sequence key (C.2.2.2.6). ``case_insensitive`` is set for PN when so configured.
    """

    tag: int
    vr: str
    level: Level
    terms: tuple[Term, ...] = ()
    items: tuple[Match, ...] = ()
    case_insensitive: bool = False
    # The keys the request's sequence item names (returned in each matching item).
    item_tags: tuple[int, ...] = ()
    # Several values, every one empty (a lone backslash): no entity matches (from_dimse).
    nothing: bool = False

    @property
    def universal(self) -> bool:
        return not self.terms and not self.items and not self.nothing


@dataclass(frozen=True)
class CombinedDateTime:
    """StudyDate and StudyTime ranges read as one date-time range (C.2.2.2.5.1)."""

    date_tag: int
    time_tag: int
    low: str | None  # "YYYYMMDDHHMMSS.FFFFFF"
    high: str | None


@dataclass(frozen=True)
class QueryOptions:
    """Choices the standard leaves to the SCP (documented in the conformance statement)."""

    pn_case_insensitive: bool = True
    relational: bool = False  # negotiated per association (C.4.1.2.2)
    combined_datetime: bool = False  # negotiated per association (C.2.2.2.5.1)
    max_results: int = 0  # 0: no limit


@dataclass(frozen=True)
class Query:
    level: Level
    model: InformationModel
    matches: tuple[Match, ...]
    # Tags to return, in request order, with their level: every key of the request.
    return_tags: tuple[tuple[int, Level], ...] = ()
    combined: CombinedDateTime | None = None
    charset: tuple[str, ...] = field(default_factory=tuple)  # of the request
    limit: int = 0  # 0: all (QIDO-RS limit/offset)
    offset: int = 0
    max_results: int = 0  # 0: no maximum; past it the query fails (TooManyMatches)
    # Sequence keys with an item: which items and which of their keys come back (C.2.2.2.6).
    sequences: tuple[Match, ...] = ()
    # QIDO-RS includefield=all (PS3.18 8.3.4.3): every stored attribute of the joined levels.
    include_all: bool = False
    # The order of the matches (pypacs' QIDO-RS orderby extension): keys with a column, each
    # ascending or descending; then arrival order. Empty: arrival order.
    order: tuple[SortKey, ...] = ()


@dataclass(frozen=True)
class SortKey:
    """One key of a result order: a key with an index column, at its level."""

    tag: int
    level: Level
    descending: bool = False
