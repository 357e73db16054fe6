"""Jobs that send studies to peers: their state is in the index, so a job started through
one Archive is read, followed and cancelled through another over the same database; at most
so many run in a node at once; old finished jobs are forgotten past a bound."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from pypacs.archive import Archive, ArchiveOptions, Retrieval
from pypacs.errors import OutOfResources
from pypacs.model.status import Status
from pypacs.remote.export import EchoResult, IsCancelled, OnProgress, Progress, RemoteError
from pypacs.remote.jobs import Jobs, JobState
from pypacs.remote.registry import Peer, Peers

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
        self,
        peer: Peer,
        study_uid: str,
        on_progress: OnProgress,
        cancelled: IsCancelled,
        skip: Collection[str] = (),
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


class ListExporter:
    """An exporter that 'sends' the instances of a fixed list but those skipped, each
    confirmed with its status, and remembers what it sent."""

    def __init__(self, uids: list[str], status_of: dict[str, int] | None = None) -> None:
        self.uids = uids
        self.status_of = status_of or {}
        self.sent: list[str] = []
        self.skipped: set[str] = set()

    def echo(self, peer: Peer) -> EchoResult:
        raise AssertionError("not called")

    def send(
        self, peer: Peer, instances: Retrieval, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        raise AssertionError("not called")

    def send_study(
        self,
        peer: Peer,
        study_uid: str,
        on_progress: OnProgress,
        cancelled: IsCancelled,
        skip: Collection[str] = (),
    ) -> Progress:
        self.skipped = set(skip)
        todo = [uid for uid in self.uids if uid not in self.skipped]
        completed = failed = 0
        for n, uid in enumerate(todo, start=1):
            status = self.status_of.get(uid, 0x0000)
            self.sent.append(uid)
            completed += status == 0
            failed += status != 0
            on_progress(
                Progress(Status.PENDING, len(todo) - n, completed, failed, 0, sent=(uid, status))
            )
        final = Status.SUCCESS if not failed else Status.SUB_OPERATIONS_WARNING
        return Progress(final, None, completed, failed, 0)


def test_a_job_whose_node_stopped_renewing_is_taken_over_after_what_was_confirmed(
    archive: Archive, other: Archive
) -> None:
    uids = [f"1.2.9.{n}" for n in range(1, 9)]
    # A node that died after the destination confirmed three instances (one refused).
    dead = archive.jobs.create("far", "1.2.9", state=JobState.RUNNING, claimed_by="gone:1")
    for uid, status in [(uids[0], 0x0000), (uids[1], 0xA700), (uids[2], 0x0000)]:
        archive.jobs.record_item(dead.id, uid, status)
    exporter = ListExporter(uids)
    taker = Jobs(other, exporter, peers=Peers.of([FAR]), save_every=0)
    taker.tick()  # its lease still holds: not taken
    assert exporter.sent == []
    assert taker.get(dead.id).claimed_by == "gone:1"  # type: ignore[union-attr]
    archive.jobs.lease_seconds = -60  # its last renewal: a lease that ran out a minute ago
    assert archive.jobs.renew("gone:1", [dead.id]) == {}
    taker.tick()
    done = wait_for(lambda: (j := taker.get(dead.id)) and j.state.finished and j)
    assert exporter.skipped == set(uids[:3])
    assert exporter.sent == uids[3:]  # none of the confirmed again, every other once
    assert (done.state, done.completed, done.failed, done.remaining) == (JobState.DONE, 7, 1, 0)
    assert (done.status, done.failed_uids) == (Status.SUB_OPERATIONS_WARNING, (uids[1],))
    assert (done.claimed_by, done.attempts) == (taker.node, 2)
    assert [uid for uid, _ in other.jobs.items(dead.id)] == sorted(uids)


def test_a_job_taken_over_by_another_node_stops_where_it_ran(
    archive: Archive, other: Archive
) -> None:
    exporter = HeldExporter()
    here = Jobs(archive, exporter, save_every=0)
    started = here.start("1.2.1", FAR)
    wait_for(lambda: (j := here.get(started.id)) and j.completed == 1, what="progress")
    # Another node claims it as if its lease had run out (say, this node hung).
    archive.jobs.lease_seconds = -60
    assert here.ledger.renew(here.node, [started.id]) == {}
    archive.jobs.lease_seconds = 30
    # (SKIP LOCKED passes over the row while a progress save holds it: try again.)
    claimed = wait_for(lambda: other.jobs.claim("elsewhere:2"), what="the claim")
    assert claimed is not None and claimed.id == started.id and claimed.attempts == 2
    here.tick()  # its renewal finds the job is another node's: it stops sending
    wait_for(lambda: here._running == 0, what="the job's thread to end")
    after = here.get(started.id)
    assert after is not None
    # The node that lost it wrote nothing over the new owner's record.
    assert (after.state, after.claimed_by) == (JobState.RUNNING, "elsewhere:2")


def test_a_job_of_an_unknown_remote_or_taken_up_too_often_fails(
    archive: Archive, other: Archive
) -> None:
    archive.jobs.lease_seconds = -1  # every claim has run out at once
    unknown = archive.jobs.create("nowhere", "1.2.7", state=JobState.RUNNING, claimed_by="x:1")
    taker = Jobs(other, ListExporter([]), peers=Peers.of([FAR]), max_attempts=3)
    taker.tick()
    failed = taker.get(unknown.id)
    assert failed is not None
    assert (failed.state, failed.error) == (
        JobState.FAILED,
        f"unknown remote 'nowhere' on {taker.node}",
    )
    tired = archive.jobs.create("far", "1.2.8", state=JobState.RUNNING, claimed_by="x:1")
    for n in range(3):
        assert archive.jobs.claim(f"x:{n + 2}") is not None
    taker.tick()
    gave_up = taker.get(tired.id)
    assert gave_up is not None
    assert (gave_up.state, gave_up.error) == (JobState.FAILED, "given up after 4 attempts")
