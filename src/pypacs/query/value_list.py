"""A list of values as one bound parameter, in a statement whose text does not depend on the
list's length.

A key with several values (a list of UIDs, PS3.4 C.2.2.2.2; multiple values, C.2.2.2.8)
could be compiled as one comparison per value, but then each length is a statement of its
own: SQLAlchemy keeps one compiled statement per text (a long UID list costs megabytes),
and SQLite refuses an expression of a thousand terms. Here the list is one parameter: an
array on PostgreSQL (``= ANY(:values)``), one JSON text on SQLite (``json_each(:values)``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, ColumnElement, Dialect, String, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator

_ELEMENT_TYPES = {"text": "TEXT", "integer": "BIGINT"}


class _ListParameter(TypeDecorator[list[Any]]):
    """A Python list bound as an array (PostgreSQL) or as one JSON text (SQLite)."""

    impl = String
    cache_ok = True

    def __init__(self, element: str = "text") -> None:
        super().__init__()
        self.element = element

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            inner: TypeEngine[Any] = BigInteger() if self.element == "integer" else String()
            return dialect.type_descriptor(ARRAY(inner))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value, separators=(",", ":"))


class AnyOf(ColumnElement[bool]):
    """``column`` equals one of the values, or (``like``) is LIKE one of the patterns
    (backslash escapes)."""

    __visit_name__ = "pypacs_any_of"
    type = Boolean()
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it so)
        ("target", InternalTraversal.dp_clauseelement),
        ("items", InternalTraversal.dp_clauseelement),
        ("is_like", InternalTraversal.dp_boolean),
        ("item_type", InternalTraversal.dp_string),
    ]

    def __init__(
        self,
        column: ColumnElement[Any],
        values: Sequence[str | int],
        *,
        like: bool = False,
        integer: bool = False,
    ) -> None:
        self.target = column
        self.is_like = like
        self.item_type = "integer" if integer else "text"
        self.items = bindparam(
            None, list(values), type_=_ListParameter(self.item_type), unique=True
        )

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.target._from_objects)


class InAnyRange(ColumnElement[bool]):
    """``column`` lies in one of the ranges (``None``: an open end); a NULL in none."""

    __visit_name__ = "pypacs_in_any_range"
    type = Boolean()
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it so)
        ("target", InternalTraversal.dp_clauseelement),
        ("lows", InternalTraversal.dp_clauseelement),
        ("highs", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self, column: ColumnElement[Any], ranges: Sequence[tuple[str | None, str | None]]
    ) -> None:
        self.target = column
        kind = _ListParameter()
        self.lows = bindparam(None, [low for low, _ in ranges], type_=kind, unique=True)
        self.highs = bindparam(None, [high for _, high in ranges], type_=kind, unique=True)

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.target._from_objects)


@compiles(AnyOf)
def _any_of_sqlite(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.target, **kw)
    values = compiler.process(element.items, **kw)
    if element.is_like:
        return (
            f"EXISTS (SELECT 1 FROM json_each({values}) AS v "
            f"WHERE {column} LIKE v.value ESCAPE '\\')"
        )
    return f"{column} IN (SELECT value FROM json_each({values}))"


@compiles(AnyOf, "postgresql")
def _any_of_postgresql(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.target, **kw)
    array = _ELEMENT_TYPES[element.item_type]
    values = f"CAST({compiler.process(element.items, **kw)} AS {array}[])"
    if element.is_like:
        # PostgreSQL's LIKE escapes with a backslash unless told otherwise.
        return f"{column} LIKE ANY ({values})"
    return f"{column} = ANY ({values})"


@compiles(InAnyRange)
def _in_any_range_sqlite(element: InAnyRange, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.target, **kw)
    lows = compiler.process(element.lows, **kw)
    highs = compiler.process(element.highs, **kw)
    return (
        f"({column} IS NOT NULL AND EXISTS (SELECT 1 FROM json_each({lows}) AS lo "
        f"JOIN json_each({highs}) AS hi ON hi.key = lo.key "
        f"WHERE (lo.value IS NULL OR {column} >= lo.value) "
        f"AND (hi.value IS NULL OR {column} <= hi.value)))"
    )


@compiles(InAnyRange, "postgresql")
def _in_any_range_postgresql(element: InAnyRange, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.target, **kw)
    lows = f"CAST({compiler.process(element.lows, **kw)} AS TEXT[])"
    highs = f"CAST({compiler.process(element.highs, **kw)} AS TEXT[])"
    return (
        f"({column} IS NOT NULL AND EXISTS (SELECT 1 FROM unnest({lows}, {highs}) "
        f"AS r(lo, hi) WHERE (r.lo IS NULL OR {column} >= r.lo) "
        f"AND (r.hi IS NULL OR {column} <= r.hi)))"
    )
