"""Versioned, forward-only schema migrations and their runner.

Each step is a module ``NNNN_name.py`` with ``VERSION`` and ``upgrade(conn)``. Step 0001
creates the schema as it stood at version 1; every later change is a new step with
explicit operations, never an edit of an applied one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from sqlalchemy import Connection, Engine, func, inspect, select

from pypacs.index import schema, tx


def _steps() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name[:4].isdigit())
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


LATEST: int = max(step.VERSION for step in _steps())


def current_version(conn: Connection) -> int:
    """The schema version of the database (0 when empty)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to the latest version; safe to run from several nodes at once.

    Returns the version reached.
    """

    def run(conn: Connection) -> int:
        if conn.dialect.name == "postgresql":
            # Nodes starting together take turns; the second finds nothing left to do.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
        version = current_version(conn)
        for step in _steps():
            if version < step.VERSION:
                upgrade: Callable[[Connection], None] = step.upgrade
                upgrade(conn)
                conn.execute(schema.schema_version.delete())
                conn.execute(schema.schema_version.insert().values(version=step.VERSION))
                version = step.VERSION
        return version

    return tx.write(engine, run)
