"""Index statements on the ``job`` table: insert, read, update (guarded by the state a
job is in and the node holding it), forget old finished ones; claim a job whose lease ran
out, renew a node's leases; the instances a job's destination confirmed (``job_item``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)

from pypacs.index.schema import job, job_item


def insert_job(conn: Connection, values: Mapping[str, Any]) -> int:
    """Insert a job row; its primary key."""
    pk = conn.execute(insert(job).values(**values).returning(job.c.pk)).scalar_one()
    return int(pk)


def job_row(conn: Connection, pk: int) -> RowMapping | None:
    """The job row with primary key ``pk``, if any."""
    return conn.execute(select(job).where(job.c.pk == pk)).mappings().first()


def update_job(
    conn: Connection,
    pk: int,
    values: Mapping[str, Any],
    *,
    in_states: Collection[str],
    owner: str | None = None,
) -> bool:
    """Set ``values`` on the job if its state is one of ``in_states`` (and, with ``owner``,
    that node still holds it); whether it was."""
    statement = update(job).where(job.c.pk == pk, job.c.state.in_(list(in_states)))
    if owner is not None:
        statement = statement.where(job.c.claimed_by == owner)
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


def _claimable(now: str, states: Collection[str], exclude: Collection[int]) -> ColumnElement[bool]:
    # Unfinished and left by its node (the lease ran out, or none was ever taken); a job
    # the claiming node still runs is renewed by it, never claimed again.
    claimable = and_(
        job.c.state.in_(list(states)),
        or_(job.c.lease_until.is_(None), job.c.lease_until < now),
    )
    return and_(claimable, job.c.pk.not_in(list(exclude))) if exclude else claimable


def claim_job(
    conn: Connection,
    node: str,
    *,
    now: str,
    until: str,
    states: Collection[str],
    exclude: Collection[int] = (),
) -> RowMapping | None:
    """Claim one job in ``states`` whose lease ran out before ``now`` for ``node``, until
    ``until`` (its attempts counted), but the jobs ``exclude`` (those ``node`` still runs);
    the job row as claimed, or None."""
    claimable = _claimable(now, states, exclude)
    if conn.dialect.name == "postgresql":
        # SKIP LOCKED: nodes claiming at once each take another job, none waits on another.
        pick = (
            select(job.c.pk)
            .where(claimable)
            .order_by(job.c.pk)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        pk = conn.execute(pick).scalar()
        if pk is None:
            return None
        where = job.c.pk == pk
    else:
        # SQLite: one conditional UPDATE, atomic under the write lock of BEGIN IMMEDIATE.
        first = select(job.c.pk).where(claimable).order_by(job.c.pk).limit(1).scalar_subquery()
        where = and_(job.c.pk == first, claimable)
    statement = (
        update(job)
        .where(where)
        .values(claimed_by=node, lease_until=until, updated_at=now, attempts=job.c.attempts + 1)
        .returning(*job.c)
    )
    return conn.execute(statement).mappings().first()


def renew_jobs(
    conn: Connection, node: str, pks: Collection[int], *, until: str, state: str
) -> dict[int, str]:
    """Extend ``node``'s lease on the jobs ``pks`` that are still its own and in ``state``;
    the state of each job that was not renewed (cancelled, finished, taken over: ``"lost"``,
    or gone: ``"gone"``)."""
    if not pks:
        return {}
    conn.execute(
        update(job)
        .where(job.c.pk.in_(list(pks)), job.c.claimed_by == node, job.c.state == state)
        .values(lease_until=until)
    )
    rows = conn.execute(
        select(job.c.pk, job.c.state, job.c.claimed_by).where(job.c.pk.in_(list(pks)))
    )
    seen = {int(pk): (row_state, owner) for pk, row_state, owner in rows}
    lost: dict[int, str] = {}
    for pk in pks:
        if pk not in seen:
            lost[pk] = "gone"
        elif seen[pk][0] != state:
            lost[pk] = seen[pk][0]
        elif seen[pk][1] != node:
            lost[pk] = "lost"
    return lost


def record_item(conn: Connection, job_pk: int, sop_instance_uid: str, status: int) -> None:
    """Record that the job's destination answered ``status`` for this instance."""
    key = and_(job_item.c.job_pk == job_pk, job_item.c.sop_instance_uid == sop_instance_uid)
    if conn.execute(select(job_item.c.status).where(key)).first() is None:
        conn.execute(
            insert(job_item).values(job_pk=job_pk, sop_instance_uid=sop_instance_uid, status=status)
        )
    else:
        conn.execute(update(job_item).where(key).values(status=status))


def job_items(conn: Connection, job_pk: int) -> list[tuple[str, int]]:
    """The instances the job's destination confirmed, with their statuses, in UID order."""
    rows = conn.execute(
        select(job_item.c.sop_instance_uid, job_item.c.status)
        .where(job_item.c.job_pk == job_pk)
        .order_by(job_item.c.sop_instance_uid)
    )
    return [(str(uid), int(status)) for uid, status in rows]
