"""make_engine(url): one Engine per process, with the pragmas and pool each backend needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pypacs.errors import ConfigError

WRITE_OPTION = "pypacs_write"
# The value of WRITE_OPTION for a write whose loss in a power failure (not a crash of the
# process) is made good from the blob store: a new instance's rows, which start-up's check
# re-indexes from its durable file (archive/check.py). On SQLite such a commit skips its
# fsync (synchronous=NORMAL in WAL mode); every other write is synced before it returns.
RECOVERABLE = "recoverable"
# Compiled statements SQLAlchemy keeps per engine. Queries' statements do not vary with the
# number of values a key lists (query/value_list.py); the bound is what holds if some other
# statement ever does.
QUERY_CACHE_SIZE = 100


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the process's engine for ``url`` (``sqlite:///…`` or ``postgresql+psycopg://…``);
    a PostgreSQL engine keeps ``pool_size`` connections, and a few more at peaks.

    Raises:
        ConfigError: the URL names a backend pypacs does not support.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database url {url!r} is not a URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(
                parsed,
                pool_size=pool_size,
                max_overflow=max(2, pool_size // 2),
                # A connection the server closed (a restart, a failover) is found before use
                # and replaced: service resumes without restarting pypacs. The statement that
                # was under way when it went fails once, as IndexUnavailable.
                pool_pre_ping=True,
                # Not forever on an unreachable server: a request fails (0xA700, 503) instead.
                pool_timeout=10,
                connect_args={"connect_timeout": 5},
                query_cache_size=QUERY_CACHE_SIZE,
            )
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"{url!r} needs the PostgreSQL driver: pip install 'pypacs[postgresql]'"
            ) from exc
    raise ConfigError(f"unsupported database {backend!r} in {url!r}: expected sqlite or postgresql")


def close_engine(engine: Engine) -> None:
    """Release the engine; SQLite folds its write-ahead log back into the database file."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's own transaction handling is turned off so that BEGIN is ours: IMMEDIATE
    # for writes (one writer, no upgrade deadlocks), deferred for reads; savepoints work.
    engine = create_engine(
        url,
        connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 30},
        query_cache_size=QUERY_CACHE_SIZE,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns (writes marked RECOVERABLE relax it
        # for their own transaction, _on_begin).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # DICOM matching is case-sensitive (PS3.4 C.2.2.2); SQLite's LIKE is not, by default.
        # (Case-insensitive PN matching uses upper-cased match columns instead.)
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        if write:
            # Set per write transaction: the connection goes back to the pool afterwards.
            level = "NORMAL" if write == RECOVERABLE else "FULL"
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
