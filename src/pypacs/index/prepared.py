"""Core statements compiled once per dialect and run on the driver's cursor.

The ingest path runs a handful of fixed statements per instance. Through ``Connection.execute``
each costs tens of microseconds of SQLAlchemy bookkeeping (cache key, parameter processing,
result set-up) around a few microseconds of database work; compiled once here, a statement
is its SQL text and the order of its parameters, executed on the DBAPI cursor of the same
connection, inside the same transaction. Driver errors become SQLAlchemy's (``DBAPIError``
and its subclasses), as ``Connection.execute`` raises them, so tx.py's retries and
translations see no difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Params = Mapping[str, object]


class Prepared:
    """One statement compiled for one dialect: its SQL text and parameter names in order."""

    __slots__ = ("names", "positional", "processors", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        if compiled.escaped_bind_names:
            raise ValueError("a parameter name needs escaping: run it with Connection.execute")
        for name, bind in compiled.binds.items():
            # Every value comes from the caller: a literal turned into a bound parameter
            # would need SQLAlchemy's parameter processing at each execution.
            if not bind.required:
                raise ValueError(f"bound parameter {name!r} is not a required bindparam")
        self.sql: str = compiled.string
        self.positional: bool = compiled.positional
        self.names: tuple[str, ...] = tuple(
            compiled.positiontup or () if compiled.positional else compiled.binds
        )
        # The type conversions SQLAlchemy would apply (e.g. bytes → the driver's Binary).
        self.processors: tuple[tuple[int, str, Callable[[Any], Any]], ...] = tuple(
            (at, name, process)
            for at, name in enumerate(self.names)
            if (process := compiled.binds[name].type.bind_processor(dialect)) is not None
        )

    def params(self, values: Params) -> Sequence[object] | Params:
        """The driver's parameters for ``values`` (a name absent from them is NULL)."""
        if self.positional:
            ordered = [values.get(name) for name in self.names]
            for at, _, process in self.processors:
                ordered[at] = process(ordered[at])
            return tuple(ordered)
        named = {name: values.get(name) for name in self.names}
        for _, name, process in self.processors:
            named[name] = process(named[name])
        return named


class Runner:
    """Runs prepared statements on one connection's cursor, within its transaction."""

    __slots__ = ("_conn", "_cursor", "_dbapi_error")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        dialect = conn.dialect
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def rows(self, prepared: Prepared, values: Params) -> list[tuple[Any, ...]]:
        """Execute and fetch every row (a SELECT, or DML with RETURNING)."""
        cursor = self._execute(prepared, values)
        return list(cursor.fetchall())

    def first(self, prepared: Prepared, values: Params) -> tuple[Any, ...] | None:
        """Execute and return the first row, or None."""
        rows = self.rows(prepared, values)
        return rows[0] if rows else None

    def run(self, prepared: Prepared, values: Params) -> None:
        """Execute a statement that returns no rows."""
        self._execute(prepared, values)

    def _execute(self, prepared: Prepared, values: Params) -> Any:
        params = prepared.params(values)
        try:
            return self._cursor.execute(prepared.sql, params)
        except self._dbapi_error as exc:
            dialect = self._conn.dialect
            dbapi_conn = self._conn.connection.dbapi_connection
            lost = dialect.is_disconnect(exc, dbapi_conn, self._cursor)  # type: ignore[arg-type]
            if lost:
                self._conn.invalidate(exc)
            raise DBAPIError.instance(
                prepared.sql,
                dict(values),
                exc,
                self._dbapi_error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc

    def close(self) -> None:
        self._cursor.close()


class Statements:
    """A set of statements compiled lazily for each dialect they run on."""

    def __init__(self, **statements: ClauseElement) -> None:
        self._statements = statements
        self._by_dialect: dict[tuple[str, str, str], dict[str, Prepared]] = {}

    def for_dialect(self, dialect: Dialect) -> dict[str, Prepared]:
        """The statements compiled for ``dialect`` (compiled on first use, then kept)."""
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        compiled = self._by_dialect.get(key)
        if compiled is None:
            compiled = {
                name: Prepared(statement, dialect) for name, statement in self._statements.items()
            }
            self._by_dialect[key] = compiled
        return compiled
