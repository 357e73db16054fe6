"""Index statements on the ``job`` table: insert, read, update (guarded by the state a
job is in), and forget old finished ones."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from pypacs.index.schema import job


def insert_job(conn: Connection, values: Mapping[str, Any]) -> int:
    """Insert a job row; its primary key."""
    pk = conn.execute(insert(job).values(**values).returning(job.c.pk)).scalar_one()
    return int(pk)


def job_row(conn: Connection, pk: int) -> RowMapping | None:
    """The job row with primary key ``pk``, if any."""
    return conn.execute(select(job).where(job.c.pk == pk)).mappings().first()


def update_job(
    conn: Connection, pk: int, values: Mapping[str, Any], *, in_states: Collection[str]
) -> bool:
    """Set ``values`` on the job if its state is one of ``in_states``; whether it was."""
    statement = update(job).where(job.c.pk == pk, job.c.state.in_(list(in_states)))
    return conn.execute(statement.values(**values)).rowcount == 1


def forget_jobs(conn: Connection, finished_states: Collection[str], keep: int) -> int:
    """Delete the finished jobs but the ``keep`` most recent; how many went."""
    finished = job.c.state.in_(list(finished_states))
    newest = select(job.c.pk).where(finished).order_by(job.c.pk.desc()).limit(keep)
    kept = [int(pk) for pk in conn.execute(newest).scalars()]
    statement = delete(job).where(finished)
    if kept:
        statement = statement.where(job.c.pk < min(kept))
    return conn.execute(statement).rowcount
