"""The jobs that send studies to peers, as the index keeps them: ``Job`` is one job's
state; ``JobLedger`` creates, reads and saves them through ``index.tx``.

``remote.jobs`` runs them; the record lives here because the archive reads and writes it
and ``remote`` may not import ``index``. Every node over the same index sees every job.

A node holds a job it runs by a lease (``lease_until``) that it renews; a job whose lease
ran out is claimed by another node (``claim``), which resumes it after the instances the
destination already confirmed (``record_item``, ``items``). Lease times are the nodes'
clocks in UTC: nodes over one index must keep their clocks within a fraction of
``lease_seconds`` (NTP does).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import Connection, Engine, RowMapping

from pypacs.index import tx
from pypacs.index.jobs import (
    claim_job,
    forget_jobs,
    insert_job,
    job_items,
    job_row,
    record_item,
    renew_jobs,
    update_job,
)


class JobState(Enum):
    """Where a job is: waiting for a node, being run by one, or finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every instance went, or the peer warned about some
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


FINISHED = tuple(s for s in JobState if s.finished)
UNFINISHED = tuple(s for s in JobState if not s.finished)


@dataclass(frozen=True)
class Job:
    """A study sent to a peer: its state and sub-operation counts as last saved."""

    id: str
    peer: str
    study_uid: str
    state: JobState
    created: str
    updated: str
    status: int | None = None  # the last DIMSE status reported (PS3.4 C.4.2.1.5)
    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    error: str | None = None
    claimed_by: str | None = None  # the node running it
    lease_until: str | None = None
    attempts: int = 0  # how many times a node took it up (1: never taken over)

    @property
    def finished(self) -> str | None:
        """When the job finished, if it has."""
        return self.updated if self.state.finished else None


def now(later: float = 0.0) -> str:
    """The time as jobs record it (``later`` seconds from now): ISO 8601 in UTC, to the
    millisecond, so that two times compare as text."""
    return (datetime.now(UTC) + timedelta(seconds=later)).isoformat(timespec="milliseconds")


class JobLedger:
    """The jobs in the index; thread-safe (each call is one transaction). A node's claim
    on a job lasts ``lease_seconds`` unless renewed."""

    def __init__(self, engine: Engine, lease_seconds: float = 30.0) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds

    def create(
        self, peer: str, study_uid: str, *, state: JobState, claimed_by: str | None = None
    ) -> Job:
        """A new job, saved.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        # Unguessable, and in order of creation when read by a person.
        token = secrets.token_hex(6)
        stamp = now()
        lease = now(self.lease_seconds) if claimed_by is not None else None
        attempts = 1 if claimed_by is not None else 0
        values = {
            "token": token,
            "peer": peer,
            "study_instance_uid": study_uid,
            "state": state.value,
            "created_at": stamp,
            "updated_at": stamp,
            "claimed_by": claimed_by,
            "lease_until": lease,
            "attempts": attempts,
        }
        pk = tx.write(self.engine, lambda conn: insert_job(conn, values))
        return Job(
            f"{pk}-{token}",
            peer,
            study_uid,
            state,
            stamp,
            stamp,
            claimed_by=claimed_by,
            lease_until=lease,
            attempts=attempts,
        )

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if the index has it.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        pk, token = _parse_id(job_id)
        if pk is None:
            return None
        row = tx.read(self.engine, lambda conn: job_row(conn, pk))
        if row is None or row["token"] != token:
            return None
        return _job(row)

    def save(
        self, job: Job, *, if_in: Collection[JobState] = UNFINISHED, owner: str | None = None
    ) -> Job | None:
        """Save the job's state and counts, if its saved state is one of ``if_in`` (a job
        finished meanwhile, e.g. cancelled, is left as it is) and, with ``owner``, that node
        still holds it (not taken over); the job as saved, or None.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        pk, _ = _parse_id(job.id)
        if pk is None:
            return None
        stamp = now()
        values = {
            "state": job.state.value,
            "status": job.status,
            "remaining": job.remaining,
            "completed": job.completed,
            "failed": job.failed,
            "warning": job.warning,
            "failed_uids": json.dumps(list(job.failed_uids)),
            "error": job.error,
            "updated_at": stamp,
        }
        states = [s.value for s in if_in]

        def write(conn: Connection) -> bool:
            return update_job(conn, pk, values, in_states=states, owner=owner)

        if not tx.write(self.engine, write):
            return None
        return replace(job, updated=stamp)

    def cancel(self, job_id: str) -> Job | None:
        """Mark an unfinished job cancelled, whichever node runs it (that node stops at its
        next save or lease renewal); the job as it is then, or None when there is none.

        Raises:
            IndexUnavailable: the index cannot be read or written.
        """
        pk, _ = _parse_id(job_id)
        if pk is None or self.get(job_id) is None:
            return None
        values = {"state": JobState.CANCELLED.value, "updated_at": now()}
        states = [s.value for s in UNFINISHED]
        tx.write(self.engine, lambda conn: update_job(conn, pk, values, in_states=states))
        return self.get(job_id)

    def claim(self, node: str, running: Collection[str] = ()) -> Job | None:
        """Claim for ``node`` one unfinished job whose node stopped renewing its lease (or
        that no node took up), but those ``running`` (that ``node`` runs); the job as
        claimed, or None when there is none.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        states = [s.value for s in UNFINISHED]
        exclude = [pk for job_id in running if (pk := _parse_id(job_id)[0]) is not None]

        def write(conn: Connection) -> RowMapping | None:
            until = now(self.lease_seconds)
            return claim_job(conn, node, now=now(), until=until, states=states, exclude=exclude)

        row = tx.write(self.engine, write)
        return None if row is None else _job(row)

    def renew(self, node: str, job_ids: Collection[str]) -> dict[str, str]:
        """Renew ``node``'s lease on the running jobs ``job_ids``; for each job it no longer
        runs, why: its state (``cancelled``, …), ``lost`` (another node took it over) or
        ``gone`` (forgotten).

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        by_pk = {pk: job_id for job_id in job_ids if (pk := _parse_id(job_id)[0]) is not None}
        until = now(self.lease_seconds)
        running = JobState.RUNNING.value

        def write(conn: Connection) -> dict[int, str]:
            return renew_jobs(conn, node, list(by_pk), until=until, state=running)

        return {by_pk[pk]: why for pk, why in tx.write(self.engine, write).items()}

    def record_item(self, job_id: str, sop_instance_uid: str, status: int) -> None:
        """Record that the job's destination answered ``status`` for this instance.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        pk, _ = _parse_id(job_id)
        if pk is not None:
            tx.write(self.engine, lambda conn: record_item(conn, pk, sop_instance_uid, status))

    def items(self, job_id: str) -> list[tuple[str, int]]:
        """The instances the job's destination confirmed and their statuses, by UID.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        pk, _ = _parse_id(job_id)
        if pk is None:
            return []
        return tx.read(self.engine, lambda conn: job_items(conn, pk))

    def forget(self, keep: int) -> int:
        """Forget finished jobs but the ``keep`` most recent; how many were forgotten.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        states = [s.value for s in FINISHED]
        return tx.write(self.engine, lambda conn: forget_jobs(conn, states, keep))


def _parse_id(job_id: str) -> tuple[int | None, str]:
    number, _, token = job_id.partition("-")
    if not number.isascii() or not number.isdigit() or len(number) > 18:
        return None, token
    return int(number), token


def _job(row: RowMapping) -> Job:
    return Job(
        id=f"{row['pk']}-{row['token']}",
        peer=row["peer"],
        study_uid=row["study_instance_uid"],
        state=JobState(row["state"]),
        created=row["created_at"],
        updated=row["updated_at"],
        status=row["status"],
        remaining=row["remaining"],
        completed=row["completed"],
        failed=row["failed"],
        warning=row["warning"],
        failed_uids=tuple(json.loads(row["failed_uids"])),
        error=row["error"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
        attempts=row["attempts"],
    )
