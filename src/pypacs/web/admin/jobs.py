"""Remote AEs as the admin API sees them, and the jobs that send studies to them.

``web`` may not import ``net``, so the C-ECHO and C-MOVE the admin API starts go through
``RemoteOps``, which ``server`` implements with the DIMSE client.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pypacs.errors import OutOfResources, PypacsError

log = logging.getLogger("pypacs.web.admin.jobs")


@dataclass(frozen=True)
class Remote:
    """A peer declared as ``[remotes.NAME]``."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class EchoResult:
    """The outcome of one C-ECHO: ``status`` is the DIMSE status when one came back."""

    ok: bool
    status: int | None
    milliseconds: float | None
    error: str | None = None


@dataclass(frozen=True)
class MoveProgress:
    """One C-MOVE response (PS3.7 9.3.4.2): status, its category (pending, success,
    warning, cancel, failure; PS3.7 Annex C) and the sub-operation counts."""

    status: int
    category: str
    remaining: int | None
    completed: int
    failed: int
    warning: int
    error_comment: str | None = None
    failed_uids: tuple[str, ...] = ()


class RemoteFailure(PypacsError):
    """A remote AE could not be reached, refused the association or stopped answering."""


class RemoteOps(Protocol):
    """What the admin API asks of the DIMSE side."""

    def remotes(self) -> Sequence[Remote]:
        """The configured remote AEs, in configuration order."""
        ...

    def echo(self, name: str) -> EchoResult:
        """C-ECHO the remote called ``name`` (one of ``remotes()``)."""
        ...

    def move_study(
        self, study_uid: str, name: str, on_progress: Callable[[MoveProgress], None]
    ) -> MoveProgress:
        """Send a study to the remote called ``name``; ``on_progress`` gets each response,
        the final one is also returned.

        Raises:
            RemoteFailure: no association, or it was lost before the final response.
        """
        ...


class NoRemotes:
    """``RemoteOps`` of an app without a DIMSE side: no remote is configured."""

    def remotes(self) -> Sequence[Remote]:
        return ()

    def echo(self, name: str) -> EchoResult:
        raise RemoteFailure(f"unknown remote {name!r}")

    def move_study(
        self, study_uid: str, name: str, on_progress: Callable[[MoveProgress], None]
    ) -> MoveProgress:
        raise RemoteFailure(f"unknown remote {name!r}")


# PS3.7 Annex C: a final response of these categories means the sub-operations ran.
_DONE_CATEGORIES = ("success", "warning")


@dataclass(frozen=True)
class Job:
    """A study sent to a remote: its progress as last reported."""

    id: str
    remote: str
    study_uid: str
    created: str
    state: str = "running"  # running, done (final success or warning) or failed
    status: int | None = None
    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    error: str | None = None
    finished: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "state": self.state,
            "remote": self.remote,
            "StudyInstanceUID": self.study_uid,
            "status": None if self.status is None else f"0x{self.status:04X}",
            "remaining": self.remaining,
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "failed_uids": list(self.failed_uids),
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Jobs:
    """The move jobs of this node. They live in process memory, so per node: a job
    started through one pypacs node is seen only by asking that node again, and is
    forgotten when the process stops. At most ``max_running`` run at once; the
    ``keep`` most recent finished ones stay to be asked about."""

    def __init__(self, ops: RemoteOps, *, max_running: int = 8, keep: int = 256) -> None:
        self._ops = ops
        self._max_running = max_running
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._serial = itertools.count(1)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, study_uid: str, remote: str) -> Job:
        """Start sending a study in a thread of its own; the job as it starts.

        Raises:
            OutOfResources: ``max_running`` jobs are running already.
        """
        with self._lock:
            running = sum(1 for job in self._jobs.values() if job.state == "running")
            if running >= self._max_running:
                raise OutOfResources(
                    f"{running} studies are being sent already; try again when one is done"
                )
            # Unguessable, and in order of creation when read by a person.
            job_id = f"{next(self._serial)}-{secrets.token_hex(6)}"
            job = Job(job_id, remote, study_uid, _now())
            self._jobs[job_id] = job
            self._forget_old()
        thread = threading.Thread(
            target=self._run, args=(job_id,), name=f"move-job-{job_id}", daemon=True
        )
        thread.start()
        return job

    def _forget_old(self) -> None:
        finished = [k for k, job in self._jobs.items() if job.state != "running"]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[key]

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _progress(self, job_id: str, progress: MoveProgress) -> None:
        self._update(
            job_id,
            status=progress.status,
            remaining=progress.remaining,
            completed=progress.completed,
            failed=progress.failed,
            warning=progress.warning,
            failed_uids=progress.failed_uids,
        )

    def _run(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs[job_id]  # running, so not forgotten
        try:
            final = self._ops.move_study(
                job.study_uid, job.remote, lambda p: self._progress(job_id, p)
            )
        except RemoteFailure as exc:
            log.warning("sending %s to %s failed: %s", job.study_uid, job.remote, exc)
            self._update(job_id, state="failed", error=str(exc), finished=_now())
            return
        except Exception as exc:  # the outer boundary of the job's thread: log, never lose
            log.exception("sending %s to %s failed", job.study_uid, job.remote)
            reason = f"internal error: {type(exc).__name__}"
            self._update(job_id, state="failed", error=reason, finished=_now())
            return
        self._progress(job_id, final)
        done = final.category in _DONE_CATEGORIES
        error: str | None = None
        if not done:
            error = f"the move ended with status 0x{final.status:04X}"
            if final.error_comment:
                error += f": {final.error_comment}"
        self._update(
            job_id,
            state="done" if done else "failed",
            remaining=0 if done else final.remaining,
            error=error,
            finished=_now(),
        )
        log.info(
            "sent %s to %s: %d completed, %d failed, %d warning (0x%04X)",
            job.study_uid,
            job.remote,
            final.completed,
            final.failed,
            final.warning,
            final.status,
        )
