"""Jobs that send a study to a peer: started here, run in a thread of the node that started
them, their state (``archive.jobs.Job``) saved in the index after each step so that every
node over the same index reports them, and cancelled from any node.

A node that stops while running a job leaves it ``running``; taking such jobs over (claims
with leases, ``Job.claimed_by``/``lease_until``) is for a later step.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import replace

from pypacs.archive import Archive
from pypacs.archive.jobs import UNFINISHED, Job, JobState
from pypacs.errors import OutOfResources, PypacsError
from pypacs.model.status import Category
from pypacs.remote.export import Exporter, Progress
from pypacs.remote.registry import Peer

__all__ = ["Job", "JobState", "Jobs"]

log = logging.getLogger("pypacs.remote.jobs")

# PS3.7 Annex C: a final status of these categories means the instances were sent.
_SENT = (Category.SUCCESS, Category.WARNING)


def node_name() -> str:
    """This process as ``claimed_by`` names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Jobs:
    """Starts jobs and answers about them. At most ``max_running`` run in this node at
    once; the ``keep`` most recent finished jobs stay in the index to be asked about.
    Progress is saved at most every ``save_every`` seconds, and when a job ends."""

    def __init__(
        self,
        archive: Archive,
        exporter: Exporter,
        *,
        max_running: int = 8,
        keep: int = 256,
        save_every: float = 0.5,
    ) -> None:
        self.ledger = archive.jobs
        self.exporter = exporter
        self.max_running = max_running
        self.keep = keep
        self.save_every = save_every
        self.node = node_name()
        self._lock = threading.Lock()
        self._running = 0

    def get(self, job_id: str) -> Job | None:
        """The job, whichever node started it.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        return self.ledger.get(job_id)

    def start(self, study_uid: str, peer: Peer) -> Job:
        """Start sending a study to ``peer`` in a thread of its own; the job as it starts.

        Raises:
            OutOfResources: ``max_running`` jobs are running in this node already.
            IndexUnavailable: the index cannot be written.
        """
        with self._lock:
            if self._running >= self.max_running:
                raise OutOfResources(
                    f"{self._running} studies are being sent already; try again when one is done"
                )
            self._running += 1
        try:
            job = self.ledger.create(
                peer.name, study_uid, state=JobState.RUNNING, claimed_by=self.node
            )
            self.ledger.forget(self.keep)
        except BaseException:
            self._finished()
            raise
        thread = threading.Thread(
            target=self._run, args=(job, peer), name=f"send-job-{job.id}", daemon=True
        )
        thread.start()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (its node stops between two instances); the
        job as it is then, or None when there is no such job.

        Raises:
            IndexUnavailable: the index cannot be read or written.
        """
        job = self.ledger.get(job_id)
        if job is None or job.state.finished:
            return job
        return self.ledger.save(replace(job, state=JobState.CANCELLED)) or self.ledger.get(job_id)

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1

    def _run(self, job: Job, peer: Peer) -> None:
        run = _Run(self, job)
        try:
            final = self.exporter.send_study(peer, job.study_uid, run.progress, run.cancelled)
        except PypacsError as exc:
            log.warning("sending %s to %s failed: %s", job.study_uid, peer.name, exc)
            run.end(state=JobState.FAILED, error=str(exc))
        except Exception as exc:  # the outer boundary of the job's thread: log, never lose
            log.exception("sending %s to %s failed", job.study_uid, peer.name)
            run.end(state=JobState.FAILED, error=f"internal error: {type(exc).__name__}")
        else:
            run.final(final)
            log.info(
                "sent %s to %s: %d completed, %d failed, %d warning (0x%04X)",
                job.study_uid,
                peer.name,
                final.completed,
                final.failed,
                final.warning,
                final.status,
            )
        finally:
            self._finished()


class _Run:
    """One job being run: its progress saved, its cancellation noticed."""

    def __init__(self, jobs: Jobs, job: Job) -> None:
        self.ledger = jobs.ledger
        self.save_every = jobs.save_every
        self.job = job
        self.saved_at = time.monotonic()
        self.stopped = False  # the saved job left the running state (cancelled)

    def _save(self, job: Job, if_in: Collection[JobState] = UNFINISHED) -> None:
        self.job = job
        self.saved_at = time.monotonic()
        if self.ledger.save(job, if_in=if_in) is None:
            self.stopped = True

    def progress(self, step: Progress) -> None:
        job = _counted(self.job, step)
        if time.monotonic() - self.saved_at >= self.save_every:
            self._save(job)
        else:
            self.job = job

    def cancelled(self) -> bool:
        return self.stopped

    def final(self, step: Progress) -> None:
        job = _counted(self.job, step)
        if self.stopped or step.category is Category.CANCEL:
            # Cancelled here or from another node: the counts it stopped at are kept.
            self.end(job, state=JobState.CANCELLED, if_in=(*UNFINISHED, JobState.CANCELLED))
        elif step.category in _SENT:
            self.end(replace(job, remaining=0), state=JobState.DONE)
        else:
            error = f"the move ended with status 0x{step.status:04X}"
            if step.error_comment:
                error += f": {step.error_comment}"
            self.end(job, state=JobState.FAILED, error=error)

    def end(
        self,
        job: Job | None = None,
        *,
        state: JobState,
        error: str | None = None,
        if_in: Collection[JobState] = UNFINISHED,
    ) -> None:
        try:
            self._save(replace(job or self.job, state=state, error=error), if_in)
        except PypacsError as exc:  # the index went away: the job stays as last saved
            log.error("job %s could not be saved as ended: %s", self.job.id, exc)


def _counted(job: Job, step: Progress) -> Job:
    return replace(
        job,
        status=step.status,
        remaining=step.remaining,
        completed=step.completed,
        failed=step.failed,
        warning=step.warning,
        failed_uids=step.failed_uids,
    )
