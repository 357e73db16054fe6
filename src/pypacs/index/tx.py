"""The only place that begins transactions: read, write, and a group-committing writer."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from pypacs.errors import IndexConflict, IndexUnavailable
from pypacs.index.engine import RECOVERABLE, WRITE_OPTION

T = TypeVar("T")
log = logging.getLogger(__name__)

_RETRIES = 5
# PostgreSQL serialization failure and deadlock; SQLite "database is locked".
_RETRYABLE_PGCODES = frozenset({"40001", "40P01"})


# What a peer is told when the database fails: its own text (SQL, table names, hosts)
# goes to the log only (_unavailable), never into an ErrorComment or an HTTP answer.
REASON_IN_LOG = "the reason is in the server's log"


def _unavailable(what: str, exc: DBAPIError) -> IndexUnavailable:
    log.error("index %s failed: %s", what, exc.orig)
    return IndexUnavailable(f"index unavailable: {REASON_IN_LOG}")


def _retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    if code in _RETRYABLE_PGCODES:
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig)


def read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn`` in a read transaction."""
    try:
        with engine.connect() as conn, conn.begin():
            return fn(conn)
    except OperationalError as exc:
        raise _unavailable("read", exc) from exc


def lookup(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Run ``fn``, a single read statement, on a pooled connection with no explicit
    transaction around it: one statement sees one state of the index on its own, and the
    BEGIN/COMMIT of ``read`` would cost more than the look-up.

    Raises:
        IndexUnavailable: the database cannot be reached.
    """
    try:
        with engine.connect() as conn:
            return fn(conn)
    except OperationalError as exc:
        raise _unavailable("read", exc) from exc


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction whose statements all see one state of the index: SQLite's WAL
    snapshot (taken by the first read), PostgreSQL's REPEATABLE READ."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
    except OperationalError as exc:
        raise _unavailable("read", exc) from exc


def write(engine: Engine, fn: Callable[[Connection], T], *, recoverable: bool = False) -> T:
    """Run ``fn`` in a write transaction, retried with jitter on serialization failures;
    ``recoverable``: its loss in a power failure is made good from the blob store
    (engine.RECOVERABLE), so SQLite need not sync its commit.

    Raises:
        IndexUnavailable: the database cannot be reached or keeps refusing the write.
    """
    for attempt in range(_RETRIES):
        try:
            with engine.connect() as raw:
                conn = raw.execution_options(**{WRITE_OPTION: RECOVERABLE if recoverable else True})
                with conn.begin():
                    return fn(conn)
        except DBAPIError as exc:
            if _retryable(exc) and attempt + 1 < _RETRIES:
                delay = 0.01 * (2**attempt) * (0.5 + random.random())
                log.warning("index write retried in %.3f s: %s", delay, exc.orig)
                time.sleep(delay)
                continue
            if isinstance(exc, OperationalError):
                raise _unavailable("write", exc) from exc
            raise
    raise AssertionError("unreachable")  # pragma: no cover


class _Item:
    __slots__ = ("done", "error", "fn", "recoverable", "result")

    def __init__(self, fn: Callable[[Connection], object], recoverable: bool) -> None:
        self.fn = fn
        self.recoverable = recoverable
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class GroupWriter:
    """Commits the writes of concurrent callers together, one commit per group.

    A caller who finds no commit under way leads: it runs the writes waiting (its own
    first among them) in one transaction and commits; callers arriving meanwhile wait and
    form the next group, led by one of them. Alone, a caller writes in its own thread with
    no hand-off. Each write runs in its own savepoint when it shares the transaction, so
    one failing write never undoes another; a caller returns only after the commit that
    holds its write has returned, which is what lets it acknowledge durably while the
    index pays one commit (one fsync) per group.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._leading = False
        self._closed = False

    def submit(self, fn: Callable[[Connection], T], *, recoverable: bool = False) -> T:
        """Run ``fn`` in the next group and return its result once the group is committed
        (``recoverable``: as for ``write``; a group is synced unless all its writes are).

        Raises:
            IndexUnavailable: the group could not be committed, or the writer is closed.
            Exception: whatever ``fn`` raised (its savepoint was rolled back).
        """
        item = _Item(fn, recoverable)
        with self._cond:
            if self._closed:
                raise IndexUnavailable("index writer closed")
            self._pending.append(item)
            while not item.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def close(self) -> None:
        """Refuse new writes and wait for those submitted to be committed."""
        with self._cond:
            self._closed = True
            while self._leading or self._pending:
                self._cond.wait()

    def _commit(self, batch: list[_Item]) -> None:
        results: list[tuple[_Item, object, BaseException | None]] = []

        def run_all(conn: Connection) -> None:
            results.clear()
            if len(batch) == 1:  # alone in its transaction: no savepoint needed
                results.append((batch[0], batch[0].fn(conn), None))
                return
            for item in batch:
                try:
                    with conn.begin_nested():
                        results.append((item, item.fn(conn), None))
                except Exception as exc:  # one caller's failure stays that caller's
                    results.append((item, None, _translated(exc)))

        try:
            write(self._engine, run_all, recoverable=all(item.recoverable for item in batch))
        except Exception as exc:
            failure = _translated(exc)
            if len(batch) > 1 and not isinstance(failure, IndexUnavailable | IndexConflict):
                log.error("index commit failed: %s", exc)
                failure = IndexUnavailable(f"index commit failed: {REASON_IN_LOG}")
                failure.__cause__ = exc
            for item in batch:
                item.error, item.done = failure, True
            return
        except BaseException as exc:  # e.g. KeyboardInterrupt: the others are told, not left
            for item in batch:
                item.error, item.done = exc, True
            raise
        for item, result, error in results:
            item.result, item.error, item.done = result, error, True


def _translated(exc: Exception) -> Exception:
    """Database errors become ours (the cause kept); a caller's own errors stay as raised."""
    if isinstance(exc, IntegrityError):
        log.info("index write met a concurrent write: %s", exc.orig)
        conflict = IndexConflict("index write met a concurrent write")
        conflict.__cause__ = exc
        return conflict
    if isinstance(exc, DBAPIError):
        log.error("index write failed: %s", exc.orig)
        unavailable = IndexUnavailable(f"index write failed: {REASON_IN_LOG}")
        unavailable.__cause__ = exc
        return unavailable
    return exc
