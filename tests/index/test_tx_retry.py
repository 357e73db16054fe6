"""tx.write on PostgreSQL: a transaction that loses a deadlock (SQLSTATE 40P01) or a
serialization failure (40001) is run again, and succeeds; the caller never sees it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pypacs.index import tx
from pypacs.index.engine import close_engine, make_engine

from helpers import pg_database


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    for url in pg_database():
        engine = make_engine(url, pool_size=4)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE counter (k INTEGER PRIMARY KEY, v INTEGER)")
            conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0), (2, 0)")
        yield engine
        close_engine(engine)


def _values(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {int(k): int(v) for k, v in conn.execute(sa.text("SELECT k, v FROM counter"))}


def test_a_deadlocked_write_is_retried_and_both_succeed(
    pg_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts: list[str] = []
    results: dict[str, object] = {}

    def crossing(first: int, second: int, name: str) -> None:
        def fn(conn: Connection) -> int:
            attempts.append(name)
            conn.exec_driver_sql(f"UPDATE counter SET v = v + 1 WHERE k = {first}")
            if attempts.count(name) == 1:  # the first time, both wait holding one row each
                both_hold_one.wait()
            conn.exec_driver_sql(f"UPDATE counter SET v = v + 1 WHERE k = {second}")
            return first

        try:
            results[name] = tx.write(pg_engine, fn)
        except Exception as exc:  # reported below, with its type
            results[name] = exc

    threads = [
        threading.Thread(target=crossing, args=(1, 2, "a")),
        threading.Thread(target=crossing, args=(2, 1, "b")),
    ]
    with caplog.at_level(logging.WARNING, logger="pypacs.index.tx"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert results == {"a": 1, "b": 2}
    assert _values(pg_engine) == {1: 2, 2: 2}  # each transaction counted once
    assert len(attempts) == 3  # PostgreSQL chose one victim, run again once
    retried = [r for r in caplog.records if "index write retried" in r.getMessage()]
    assert len(retried) == 1 and "deadlock detected" in retried[0].getMessage()


def test_a_serialization_failure_is_retried(pg_engine: Engine) -> None:
    attempts = 0
    other_committed = threading.Event()

    def fn(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        value = int(conn.exec_driver_sql("SELECT v FROM counter WHERE k = 1").scalar_one())
        if attempts == 1:  # another transaction changes the row we read, and commits

            def other() -> None:
                with pg_engine.begin() as c:
                    c.exec_driver_sql("UPDATE counter SET v = v + 10 WHERE k = 1")
                other_committed.set()

            threading.Thread(target=other).start()
            assert other_committed.wait(timeout=30)
        conn.exec_driver_sql(f"UPDATE counter SET v = {value + 1} WHERE k = 1")
        return value

    assert tx.write(pg_engine, fn) == 10  # the second run read the other's commit
    assert attempts == 2
    assert _values(pg_engine)[1] == 11
