"""Index reads: lookups by UID, blob key listings for consistency checks, statistics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, bindparam, func, select

from pypacs.index.schema import instance, patient, series, study

_INSTANCE_EXISTS = select(instance.c.pk).where(instance.c.sop_instance_uid == bindparam("_uid"))


def instance_exists(conn: Connection, sop_instance_uid: str) -> bool:
    return conn.execute(_INSTANCE_EXISTS, {"_uid": sop_instance_uid}).first() is not None


def stream(conn: Connection, statement: Select[Any], batch: int = 500) -> Iterator[RowMapping]:
    """Rows of a compiled query, fetched in batches (a server-side cursor on PostgreSQL)."""
    result = conn.execution_options(yield_per=batch).execute(statement)
    yield from result.mappings()


def blob_keys_between(conn: Connection, low: str, high: str) -> dict[str, str]:
    """Blob key → SOP Instance UID for keys ``low <= k < high`` (one fan-out folder)."""
    rows = conn.execute(
        select(instance.c.blob_key, instance.c.sop_instance_uid).where(
            instance.c.blob_key >= low, instance.c.blob_key < high
        )
    )
    return {key: uid for key, uid in rows}


def blob_key_batch(conn: Connection, after: str, limit: int = 5000) -> list[tuple[str, str]]:
    """The next (blob key, SOP Instance UID) pairs after ``after``, in key order."""
    rows = conn.execute(
        select(instance.c.blob_key, instance.c.sop_instance_uid)
        .where(instance.c.blob_key > after)
        .order_by(instance.c.blob_key)
        .limit(limit)
    )
    return [(key, uid) for key, uid in rows]


@dataclass(frozen=True)
class Statistics:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


def statistics(conn: Connection) -> Statistics:
    def count(table: object) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]

    size = conn.execute(select(func.coalesce(func.sum(instance.c.blob_size), 0))).scalar_one()
    return Statistics(count(patient), count(study), count(series), count(instance), int(size))
