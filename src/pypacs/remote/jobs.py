"""Jobs that send a study to a peer: their state (``archive.jobs.Job``) lives in the index,
so that every node over the same index reports them, cancels them, and takes them over.

A node runs a job in a thread of its own, holding it by a lease that its claimer thread
renews every third of ``[retrieve] job_lease_seconds``. The same thread claims the jobs
whose lease ran out (their node died, or stopped renewing) and resumes them: each instance
the destination confirmed was recorded as its response came (``JobLedger.record_item``),
so a job taken over sends the others only. The one instance in flight when a node died (sent,
its response not yet read) is sent again: nothing but the destination knows whether it
arrived. A cancel from any node is seen by the running node at its next save or renewal.
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
from pypacs.model.status import Category, Status, category
from pypacs.remote.export import Exporter, Progress
from pypacs.remote.registry import Peer, Peers

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
    Progress is saved at most every ``save_every`` seconds, and when a job ends. A job taken
    up more than ``max_attempts`` times (its nodes kept dying) fails. ``peers`` names the
    destinations of the jobs this node takes over (``start_claimer``)."""

    def __init__(
        self,
        archive: Archive,
        exporter: Exporter,
        *,
        peers: Peers | None = None,
        max_running: int = 8,
        keep: int = 256,
        save_every: float = 0.5,
        max_attempts: int = 5,
    ) -> None:
        self.ledger = archive.jobs
        self.exporter = exporter
        self.peers = peers
        self.max_running = max_running
        self.keep = keep
        self.save_every = save_every
        self.max_attempts = max_attempts
        self.node = node_name()
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # by job id: the jobs this node runs
        self._stopping = threading.Event()
        self._claimer: threading.Thread | None = None

    @property
    def _running(self) -> int:
        with self._lock:
            return len(self._runs)

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
        placeholder = f"starting-{threading.get_ident()}-{time.monotonic_ns()}"
        with self._lock:
            if len(self._runs) >= self.max_running:
                raise OutOfResources(
                    f"{len(self._runs)} studies are being sent already; try again when one is done"
                )
            self._runs[placeholder] = _Run(self, None)  # holds the place while created
        try:
            job = self.ledger.create(
                peer.name, study_uid, state=JobState.RUNNING, claimed_by=self.node
            )
            self.ledger.forget(self.keep)
        finally:
            with self._lock:
                del self._runs[placeholder]
        self._launch(_Run(self, job), peer, ())
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (its node stops between two instances); the
        job as it is then, or None when there is no such job.

        Raises:
            IndexUnavailable: the index cannot be read or written.
        """
        job = self.ledger.cancel(job_id)
        with self._lock:
            run = self._runs.get(job_id)
        if run is not None and job is not None and job.state is JobState.CANCELLED:
            run.stopped = True
        return job

    def start_claimer(self) -> None:
        """Renew this node's leases and take over abandoned jobs, in a thread, until
        ``stop``."""
        if self._claimer is None:
            self._claimer = threading.Thread(target=self._claim_loop, name="jobs", daemon=True)
            self._claimer.start()

    def stop(self) -> None:
        """Stop the claimer thread; the jobs running here stop renewing their leases."""
        self._stopping.set()
        if self._claimer is not None:
            self._claimer.join(timeout=10)

    def _claim_loop(self) -> None:
        period = self.ledger.lease_seconds / 3
        while not self._stopping.wait(period):
            try:
                self.tick()
            except PypacsError as exc:  # the index is away: try again next period
                log.warning("jobs: cannot renew or claim: %s", exc)
            except Exception:  # the outer boundary of the claimer thread: log, keep going
                log.exception("jobs: claimer failed")

    def tick(self) -> None:
        """Renew the leases of the jobs running here (a job cancelled or taken over
        meanwhile is stopped), then claim abandoned jobs while there is room.

        Raises:
            IndexUnavailable: the index cannot be written.
        """
        with self._lock:
            mine = [job_id for job_id, run in self._runs.items() if run.job is not None]
        for job_id, why in self.ledger.renew(self.node, mine).items():
            with self._lock:
                run = self._runs.get(job_id)
            if run is not None:
                log.info("job %s is no longer this node's (%s): stopping it", job_id, why)
                run.stopped = True
        while self._running < self.max_running and not self._stopping.is_set():
            with self._lock:
                running = list(self._runs)
            job = self.ledger.claim(self.node, running)
            if job is None:
                return
            self._resume(job)

    def _resume(self, job: Job) -> None:
        log.info(
            "taking over job %s (%s to %s, attempt %d, left by %s)",
            job.id,
            job.study_uid,
            job.peer,
            job.attempts,
            job.claimed_by,
        )
        run = _Run(self, job)
        peer = self.peers.named(job.peer) if self.peers is not None else None
        if job.attempts > self.max_attempts:
            run.end(state=JobState.FAILED, error=f"given up after {job.attempts - 1} attempts")
            return
        if peer is None:
            run.end(state=JobState.FAILED, error=f"unknown remote {job.peer!r} on {self.node}")
            return
        done = self.ledger.items(job.id)
        run.base = _counts_of(done)
        self._launch(run, peer, {uid for uid, _ in done})

    def _launch(self, run: _Run, peer: Peer, skip: Collection[str]) -> None:
        assert run.job is not None
        with self._lock:
            self._runs[run.job.id] = run
        thread = threading.Thread(
            target=self._run, args=(run, peer, skip), name=f"send-job-{run.job.id}", daemon=True
        )
        thread.start()

    def _run(self, run: _Run, peer: Peer, skip: Collection[str]) -> None:
        job = run.job
        assert job is not None
        try:
            final = self.exporter.send_study(
                peer, job.study_uid, run.progress, run.cancelled, skip=skip
            )
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
            with self._lock:
                self._runs.pop(job.id, None)


def _counts_of(done: list[tuple[str, int]]) -> Progress:
    """The counts of the instances a destination confirmed before a takeover."""
    kinds = [(uid, category(status)) for uid, status in done]
    return Progress(
        Status.PENDING,
        None,
        completed=sum(kind is Category.SUCCESS for _, kind in kinds),
        failed=sum(kind is Category.FAILURE for _, kind in kinds),
        warning=sum(kind is Category.WARNING for _, kind in kinds),
        failed_uids=tuple(uid for uid, kind in kinds if kind is Category.FAILURE),
    )


class _Run:
    """One job being run by this node: its progress saved, each confirmed instance
    recorded, its cancellation (or takeover by another node) noticed."""

    def __init__(self, jobs: Jobs, job: Job | None) -> None:
        self.ledger = jobs.ledger
        self.node = jobs.node
        self.save_every = jobs.save_every
        self.job = job
        self.base = Progress(Status.PENDING, None, 0, 0, 0)  # counted before a takeover
        self.saved_at = time.monotonic()
        self.stopped = False  # cancelled, or no longer this node's

    def _save(self, job: Job, if_in: Collection[JobState] = UNFINISHED) -> None:
        self.job = job
        self.saved_at = time.monotonic()
        if self.ledger.save(job, if_in=if_in, owner=self.node) is None:
            self.stopped = True

    def progress(self, step: Progress) -> None:
        assert self.job is not None
        if step.sent is not None:
            # Before the next instance goes: a node taking over skips this one.
            self.ledger.record_item(self.job.id, *step.sent)
        job = self._counted(step)
        if time.monotonic() - self.saved_at >= self.save_every:
            self._save(job)
        else:
            self.job = job

    def cancelled(self) -> bool:
        return self.stopped

    def final(self, step: Progress) -> None:
        job = self._counted(step)
        if self.stopped or step.category is Category.CANCEL:
            # Cancelled here or from another node: the counts it stopped at are kept.
            self.end(job, state=JobState.CANCELLED, if_in=(*UNFINISHED, JobState.CANCELLED))
        elif step.category in _SENT:
            if self.base.done:  # sent in two parts: the status is the whole job's
                job = replace(job, status=_final_status(job))
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
        job = job or self.job
        assert job is not None
        try:
            self._save(replace(job, state=state, error=error), if_in)
        except PypacsError as exc:  # the index went away: the job stays as last saved
            log.error("job %s could not be saved as ended: %s", job.id, exc)

    def _counted(self, step: Progress) -> Job:
        assert self.job is not None
        base = self.base
        return replace(
            self.job,
            status=step.status,
            remaining=step.remaining,
            completed=base.completed + step.completed,
            failed=base.failed + step.failed,
            warning=base.warning + step.warning,
            failed_uids=base.failed_uids + step.failed_uids,
        )


def _final_status(job: Job) -> int | None:
    """The final status of the whole job, also when it was sent in two parts (PS3.4
    C.4.2.3.1): Success when all succeeded, Warning when one or more failed or had
    warnings, Failure when all failed."""
    if job.status is None or category(job.status) not in _SENT:
        return job.status
    if not job.failed and not job.warning:
        return Status.SUCCESS
    if not job.completed and not job.warning:
        return Status.UNABLE_TO_PERFORM_SUB_OPERATIONS
    return Status.SUB_OPERATIONS_WARNING
