"""Query → one SQLAlchemy Select over the level tables; what SQL cannot decide is residual."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnClause

from pypacs.index.schema import LEVEL_TABLES, instance, patient, series, study
from pypacs.model.keys import Key, key_for_tag, keys_at
from pypacs.model.levels import LEVEL_ORDER, Level
from pypacs.model.vr import may_be_multivalued, pn_match_form
from pypacs.query.like import ESCAPE, escape_literal, like_pattern
from pypacs.query.types import CombinedDateTime, Exact, Match, Pattern, Query, Range, SortKey
from pypacs.query.value_list import AnyOf, InAnyRange

_PARENT_JOIN = {
    Level.STUDY: (study.c.patient_pk, patient.c.pk),
    Level.SERIES: (series.c.study_pk, study.c.pk),
    Level.IMAGE: (instance.c.series_pk, series.c.pk),
}


@cache  # called for every returned key of every match
def label(level: Level, column: str) -> str:
    return f"{level.value.lower()}__{column}"


@dataclass(frozen=True)
class Compiled:
    statement: Select[tuple[object, ...]]
    levels: tuple[Level, ...]  # joined: the query level and every level above it
    residual: tuple[Match, ...]  # matched in Python after SQL
    combined_residual: CombinedDateTime | None
    attrs: frozenset[Level]  # levels whose attribute sets are selected


def _levels(query: Query) -> tuple[Level, ...]:
    return LEVEL_ORDER[: query.level.depth + 1]


@cache
def column_key(tag: int) -> Key | None:
    """The key table entry of a tag when it has a column."""
    key = key_for_tag(tag)
    return key if key is not None and key.column is not None else None


def _equal_any(col: ColumnElement[Any], values: list[str]) -> ColumnElement[bool]:
    # One value is a plain comparison; several are one list parameter (value_list.py).
    return col == values[0] if len(values) == 1 else AnyOf(col, values)


def _like_any(col: ColumnElement[str], patterns: list[str]) -> ColumnElement[bool]:
    if len(patterns) == 1:
        return col.like(patterns[0], escape=ESCAPE)
    return AnyOf(col, patterns, like=True)


def _exact_multi(col: ColumnElement[str], values: list[str]) -> ColumnElement[bool]:
    # A value stored among several ("CT\MR"): equal, first, last, or in between.
    sep = "\\\\"
    patterns: list[str] = []
    for value in values:
        v = escape_literal(value)
        patterns += [v + sep + "%", "%" + sep + v, "%" + sep + v + sep + "%"]
    return or_(_equal_any(col, values), _like_any(col, patterns))


def _pn_predicate(match: Match, col: ColumnElement[str]) -> tuple[ColumnElement[bool] | None, bool]:
    """PN on its match column (upper-cased alphabetic group): exact when the key is
    case-insensitive and names the alphabetic group only; otherwise a superset or nothing."""
    forms: list[str] = []
    patterns: list[str] = []
    for term in match.terms:
        text: str = (
            term.value
            if isinstance(term, Exact)
            else term.pattern
            if isinstance(term, Pattern)
            else ""
        )
        if "=" in text:
            return None, False
        form = pn_match_form(text)
        if isinstance(term, Exact):
            forms.append(form)
        else:
            patterns.append(like_pattern(form))
    return _any_term(col, forms, patterns, []), match.case_insensitive


def _any_term(
    col: ColumnElement[str],
    exact: list[str],
    patterns: list[str],
    ranges: list[tuple[str | None, str | None]],
) -> ColumnElement[bool]:
    """Whether ``col`` matches any of the terms: each kind of term is one predicate whatever
    the number of its values (PS3.4 C.2.2.2.2 UID lists, C.2.2.2.8 multiple values)."""
    preds: list[ColumnElement[bool]] = []
    if exact:
        preds.append(_equal_any(col, exact))
    if patterns:
        preds.append(_like_any(col, patterns))
    if len(ranges) == 1:
        low, high = ranges[0]
        bounds: list[ColumnElement[bool]] = [col.is_not(None)]
        if low is not None:
            bounds.append(col >= low)
        if high is not None:
            bounds.append(col <= high)
        preds.append(and_(*bounds))
    elif ranges:
        preds.append(InAnyRange(col, ranges))
    return or_(*preds)


def _integer_predicate(match: Match, col: ColumnElement[int]) -> ColumnElement[bool]:
    """A count kept as an integer column (NumberOf...Related...): the values that are
    integers the column can hold; any other value matches no count."""
    numbers = sorted(
        {int(t.value) for t in match.terms if isinstance(t, Exact) and _int64(t.value)}
    )
    if not numbers:
        return false()
    if len(numbers) == 1:
        return col == numbers[0]
    return AnyOf(col, numbers, integer=True)


def _int64(text: str) -> bool:
    digits = text.lstrip("+-")
    return digits.isascii() and digits.isdigit() and -(2**63) <= int(text) < 2**63


def predicate(
    match: Match, key: Key, table_col: ColumnClause[str]
) -> tuple[ColumnElement[bool] | None, bool]:
    """The SQL predicate of a key with a column, and whether it decides the key exactly."""
    col: ColumnElement[str] = table_col
    if match.nothing:
        return false(), True
    if match.items:
        return None, False
    if isinstance(table_col.type, Integer):
        return _integer_predicate(match, cast(ColumnElement[int], table_col)), True
    if key.vr == "PN":
        return _pn_predicate(match, col)
    multi = may_be_multivalued(key.tag)
    exact: list[str] = []
    patterns: list[str] = []
    ranges: list[tuple[str | None, str | None]] = []
    for term in match.terms:
        if isinstance(term, Range):
            ranges.append((term.low, term.high))
        elif isinstance(term, Exact):
            exact.append(term.value)
        elif multi:
            return None, False
        else:
            patterns.append(like_pattern(term.pattern))
    if multi and exact:
        stored_among = _exact_multi(col, exact)
        return (or_(stored_among, _any_term(col, [], [], ranges)) if ranges else stored_among), True
    return _any_term(col, exact, patterns, ranges), True


def _combined_predicate(c: CombinedDateTime) -> ColumnElement[bool]:
    moment = study.c.study_date.concat(
        func.coalesce(study.c.study_time_norm, literal("000000.000000", String))
    )
    bounds: list[ColumnElement[bool]] = [study.c.study_date.is_not(None)]
    if c.low is not None:
        bounds.append(moment >= c.low)
    if c.high is not None:
        bounds.append(moment <= c.high)
    return and_(*bounds)


def _joined(query: Query, levels: tuple[Level, ...]) -> FromClause:
    joined: FromClause = LEVEL_TABLES[query.level]
    for level in reversed(levels[1:]):
        child_col, parent_col = _PARENT_JOIN[level]
        joined = joined.join(LEVEL_TABLES[level.parent], child_col == parent_col)
    return joined


def _where(
    query: Query, levels: tuple[Level, ...], sql_matching: bool
) -> tuple[list[ColumnElement[bool]], list[Match], set[Level]]:
    where: list[ColumnElement[bool]] = []
    residual: list[Match] = []
    attrs: set[Level] = set()
    for match in query.matches:
        if match.universal:
            continue  # PS3.4 C.2.2.2.3: every entity matches, as in residual.matches
        key = column_key(match.tag)
        if key is not None and match.level in levels and (sql_matching or key.derived):
            col = LEVEL_TABLES[match.level].c[str(key.match_column)]
            pred, exact = predicate(match, key, col)
            if pred is not None:
                where.append(pred)
            if exact:
                continue
        residual.append(match)
        if key is None or not key.derived:
            attrs.add(match.level)
    return where, residual, attrs


def _columns(levels: tuple[Level, ...], attrs: set[Level]) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = []
    for level in levels:
        table = LEVEL_TABLES[level]
        columns.append(table.c.pk.label(label(level, "pk")))
        for key in keys_at(level):
            if key.column is not None:
                columns.append(table.c[key.column].label(label(level, key.column)))
        if level in attrs:
            columns.append(table.c.attrs.label(label(level, "attrs")))
    return columns


def compile_query(query: Query, *, sql_matching: bool = True) -> Compiled:
    """The Select for ``query``. With ``sql_matching=False`` every key is left to the
    residual matcher over stored attributes (the property tests compare both paths)."""
    levels = _levels(query)
    where, residual, attrs = _where(query, levels, sql_matching)
    combined_residual = None
    if query.combined is not None:
        if sql_matching:
            where.append(_combined_predicate(query.combined))
        else:
            combined_residual = query.combined
    attrs.update(
        level for tag, level in query.return_tags if level in levels and column_key(tag) is None
    )
    if query.include_all:
        attrs.update(levels)
    base = LEVEL_TABLES[query.level]
    statement = (
        select(*_columns(levels, attrs))
        .select_from(_joined(query, levels))
        .where(*where)
        .order_by(*_order(query.order), base.c.pk)
    )
    if not residual and combined_residual is None:
        # One row past the maximum tells that the maximum was passed.
        limit = query.limit or (query.max_results + 1 if query.max_results else 0)
        if limit:
            statement = statement.limit(limit)
        if query.offset:
            statement = statement.offset(query.offset)
    return Compiled(statement, levels, tuple(residual), combined_residual, frozenset(attrs))


def _order(order: tuple[SortKey, ...]) -> list[ColumnElement[Any]]:
    """The ORDER BY of the orderby extension, on the indexed match columns (a name by its
    upper-cased form); an empty value sorts before any other, in either database."""
    terms: list[ColumnElement[Any]] = []
    for sort in order:
        key = column_key(sort.tag)
        if key is None or key.match_column is None:
            raise ValueError(f"no column to order by for tag {sort.tag:08X}")
        col = LEVEL_TABLES[sort.level].c[key.match_column]
        terms.append(col.desc().nulls_last() if sort.descending else col.asc().nulls_first())
    return terms


def compile_count(query: Query) -> Select[Any] | None:
    """The number of matches of ``query`` whatever its limit and offset, as one COUNT;
    ``None`` when some key is matched in Python after SQL (no count without reading all)."""
    levels = _levels(query)
    where, residual, _ = _where(query, levels, True)
    if residual:
        return None
    if query.combined is not None:
        where.append(_combined_predicate(query.combined))
    return select(func.count()).select_from(_joined(query, levels)).where(*where)


@dataclass(frozen=True)
class Located:
    """The statements of a retrieve: how many instances, then which (PS3.4 C.4.2.3.1)."""

    count: Select[Any]
    instances: Select[Any]
    # The distinct (SOP Class UID, Transfer Syntax UID) pairs: what a C-MOVE proposes.
    syntaxes: Select[Any]


def _all_levels() -> FromClause:
    return (
        instance.join(series, instance.c.series_pk == series.c.pk)
        .join(study, series.c.study_pk == study.c.pk)
        .join(patient, study.c.patient_pk == patient.c.pk)
    )


def compile_locate(query: Query) -> Located:
    """The instances under the entities a retrieve names, series by series, in arrival order.

    Retrieve keys are unique keys, all of which have columns: nothing is residual.
    """
    where, residual, _ = _where(query, LEVEL_ORDER, True)
    if residual:
        raise ValueError(f"retrieve keys without an index column: {residual}")
    located = _all_levels()
    columns = (
        instance.c.sop_instance_uid,
        instance.c.sop_class_uid,
        instance.c.transfer_syntax_uid,
        instance.c.blob_key,
        instance.c.blob_size,
    )
    return Located(
        count=select(func.count()).select_from(located).where(*where),
        instances=select(*columns)
        .select_from(located)
        .where(*where)
        .order_by(series.c.pk, instance.c.pk),
        syntaxes=select(instance.c.sop_class_uid, instance.c.transfer_syntax_uid)
        .select_from(located)
        .where(*where)
        .distinct(),
    )


def compile_attributes(query: Query) -> Select[Any]:
    """Each instance under the entities a retrieve names, with the attribute sets of its
    four levels, in the order ``compile_locate`` streams them (PS3.18 10.4.1.1.2 metadata).

    Retrieve keys all have columns: nothing is residual.
    """
    where, residual, _ = _where(query, LEVEL_ORDER, True)
    if residual:
        raise ValueError(f"retrieve keys without an index column: {residual}")
    columns = (
        patient.c.pk.label("patient_pk"),
        patient.c.attrs.label("patient_attrs"),
        study.c.pk.label("study_pk"),
        study.c.study_instance_uid,
        study.c.attrs.label("study_attrs"),
        series.c.pk.label("series_pk"),
        series.c.series_instance_uid,
        series.c.attrs.label("series_attrs"),
        instance.c.sop_instance_uid,
        instance.c.transfer_syntax_uid,
        instance.c.attrs.label("instance_attrs"),
    )
    return (
        select(*columns)
        .select_from(_all_levels())
        .where(*where)
        .order_by(series.c.pk, instance.c.pk)
    )
