"""The jobs that send studies to peers, as the index keeps them: ``Job`` is one job's
state; ``JobLedger`` creates, reads and saves them through ``index.tx``.

``remote.jobs`` runs them; the record lives here because the archive reads and writes it
and ``remote`` may not import ``index``. Every node over the same index sees every job.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import Connection, Engine, RowMapping

from pypacs.index import tx
from pypacs.index.jobs import forget_jobs, insert_job, job_row, update_job


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

    @property
    def finished(self) -> str | None:
        """When the job finished, if it has."""
        return self.updated if self.state.finished else None


def now() -> str:
    """The time as jobs record it: ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JobLedger:
    """The jobs in the index; thread-safe (each call is one transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        values = {
            "token": token,
            "peer": peer,
            "study_instance_uid": study_uid,
            "state": state.value,
            "created_at": stamp,
            "updated_at": stamp,
            "claimed_by": claimed_by,
        }
        pk = tx.write(self.engine, lambda conn: insert_job(conn, values))
        return Job(f"{pk}-{token}", peer, study_uid, state, stamp, stamp, claimed_by=claimed_by)

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

    def save(self, job: Job, *, if_in: Collection[JobState] = UNFINISHED) -> Job | None:
        """Save the job's state and counts, if its saved state is one of ``if_in`` (a job
        finished meanwhile, e.g. cancelled, is left as it is); the job as saved, or None.

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
            "claimed_by": job.claimed_by,
            "lease_until": job.lease_until,
        }
        states = [s.value for s in if_in]

        def write(conn: Connection) -> bool:
            return update_job(conn, pk, values, in_states=states)

        if not tx.write(self.engine, write):
            return None
        return replace(job, updated=stamp)

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
    )
