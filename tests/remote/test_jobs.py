"""Jobs that send studies to peers: their state is in the index, so a job started through
one Archive is read, followed and cancelled through another over the same database; at most
so many run in a node at once; old finished jobs are forgotten past a bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypacs.archive import Archive, ArchiveOptions, Retrieval
from pypacs.errors import OutOfResources
from pypacs.model.status import Status
from pypacs.remote.export import EchoResult, IsCancelled, OnProgress, Progress, RemoteError
from pypacs.remote.jobs import Jobs, JobState
from pypacs.remote.registry import Peer

from helpers import wait_for

FAR = Peer("far", "FAR", "127.0.0.1", 104)


class HeldExporter:
    """An exporter whose sends report one instance, then wait until released (or until
    the job is cancelled): jobs that stay running while we look."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def echo(self, peer: Peer) -> EchoResult:
        raise AssertionError("not called")

    def send(
        self, peer: Peer, instances: Retrieval, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        raise AssertionError("not called")

    def send_study(
        self, peer: Peer, study_uid: str, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        on_progress(Progress(Status.PENDING, 2, 1, 0, 0))
        while not self.release.wait(timeout=0.02):
            if cancelled():
                return Progress(Status.CANCEL, 2, 1, 0, 0)
            on_progress(Progress(Status.PENDING, 2, 1, 0, 0))
        if study_uid.endswith(".9"):
            raise RemoteError("FAR went away")
        return Progress(Status.SUB_OPERATIONS_WARNING, None, 2, 1, 0, ("1.2.3.4",))


@pytest.fixture
def other(db_url: str, tmp_path: Path) -> Iterator[Archive]:
    """A second Archive over the same index database, as another node would open it."""
    arc = Archive.open(
        ArchiveOptions(
            database_url=db_url,
            blob_root=str(tmp_path / "other-blobs"),
            overwrite_duplicates=False,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    yield arc
    arc.close()


def test_a_job_is_seen_and_cancelled_through_another_archive(
    archive: Archive, other: Archive
) -> None:
    exporter = HeldExporter()
    here = Jobs(archive, exporter, save_every=0)
    there = Jobs(other, HeldExporter(), save_every=0)
    started = here.start("1.2.1", FAR)
    assert started.state is JobState.RUNNING
    seen = wait_for(lambda: (j := there.get(started.id)) and j.completed == 1 and j, what="job")
    assert (seen.peer, seen.study_uid, seen.state, seen.remaining) == (
        "far",
        "1.2.1",
        JobState.RUNNING,
        2,
    )
    assert seen.created == started.created
    assert seen.finished is None
    assert there.get(started.id.split("-")[0] + "-000000000000") is None  # the token counts
    # Cancelled through the other node: the node running it stops between two instances.
    cancelled = there.cancel(started.id)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    final = wait_for(lambda: (j := here.get(started.id)) and j.status == Status.CANCEL and j)
    assert (final.state, final.completed, final.remaining) == (JobState.CANCELLED, 1, 2)
    assert final.finished is not None
    assert wait_for(lambda: here._running == 0, what="the job's thread to end")


def test_jobs_run_at_most_so_many_at_once_and_keep_the_latest(
    archive: Archive, other: Archive
) -> None:
    exporter = HeldExporter()
    jobs = Jobs(archive, exporter, max_running=2, keep=1, save_every=0)
    first = jobs.start("1.2.1", FAR)
    second = jobs.start("1.2.9", FAR)
    with pytest.raises(OutOfResources, match="2 studies are being sent already"):
        jobs.start("1.2.3", FAR)
    assert wait_for(lambda: (j := jobs.get(first.id)) and j.completed == 1, what="progress")
    exporter.release.set()
    reader = Jobs(other, HeldExporter())
    done = wait_for(lambda: (j := reader.get(first.id)) and j.state.finished and j)
    failed = wait_for(lambda: (j := reader.get(second.id)) and j.state.finished and j)
    assert (done.state, done.status, done.completed, done.failed, done.remaining) == (
        JobState.DONE,
        Status.SUB_OPERATIONS_WARNING,
        2,
        1,
        0,
    )
    assert done.failed_uids == ("1.2.3.4",)
    assert done.error is None
    assert (failed.state, failed.error) == (JobState.FAILED, "FAR went away")
    wait_for(lambda: jobs._running == 0, what="the jobs' threads to end")
    # Room again; the oldest finished job is forgotten past `keep`.
    third = jobs.start("1.2.5", FAR)
    assert reader.get(first.id) is None
    assert reader.get(second.id) is not None
    assert wait_for(lambda: (j := reader.get(third.id)) and j.state is JobState.DONE and j)
