"""Two pypacs nodes over one PostgreSQL index and one blob folder: a job started through
node A is read through node B with the same progress; when A is killed in the middle of
sending, B takes the job over once A's lease has run out and finishes it: every instance
reaches the destination, and none that the destination had confirmed is sent twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomgen import Spec, write
from helpers import pg_database, status_of, store_files, wait_for
from receiver import receiver
from serving import RunningServer

COUNT = 30
IN_FLIGHT = 12  # the receipt during which node A is killed


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    yield from pg_database()


def _job(base: str, job: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/api/jobs/{job}", timeout=30).json()
    return body


def test_a_job_of_a_killed_node_is_finished_by_another_sending_nothing_twice(
    server_factory: Callable[..., RunningServer], tmp_path: Path, pg_url: str
) -> None:
    reached, released = threading.Event(), threading.Event()
    confirmed: Counter[str] = Counter()

    def status_for(uid: str, n: int) -> int:
        if n == IN_FLIGHT:
            # A is killed while this C-STORE waits for its response: the destination
            # never confirms it, so keeps nothing of it (Refused: Out of Resources).
            reached.set()
            released.wait(timeout=120)
            return 0xA700
        confirmed[uid] += 1
        if n < IN_FLIGHT:
            time.sleep(0.1)  # a slow destination: A saves its progress on the way
        return 0x0000

    with receiver(ae_title="DEST", status_for=status_for) as dest:
        config = tmp_path / "pypacs.toml"
        config.write_text(
            f'[remotes.dest]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {dest.port}\n'
        )
        flags = ("--config", str(config), "--database-url", pg_url, "--job-lease-seconds", "2")
        data = tmp_path / "shared"
        node_a = server_factory(*flags, data=data)
        node_b = server_factory(*flags, data=data)
        folder = tmp_path / "in"
        folder.mkdir()
        files = [write(Spec("TAKE", "Take^Over", 1, 1, i), folder) for i in range(1, COUNT + 1)]
        statuses = store_files(node_a.dicom_port, files)
        assert {status_of(s) for s in statuses.values()} == {"0x0000"}
        a, b = (f"http://127.0.0.1:{n.http_port}" for n in (node_a, node_b))
        study = httpx.get(f"{b}/dicom-web/studies", timeout=30).json()[0]["0020000D"]["Value"][0]
        started = httpx.post(
            f"{a}/api/remotes/dest/move", json={"StudyInstanceUID": study}, timeout=60
        )
        assert started.status_code == 202, started.text
        job = started.json()["job"]
        assert reached.wait(timeout=60), "the job never reached the destination's gate"
        # Progress is the index's (saved at most every half second while the job runs;
        # nothing moves while the gate holds): both nodes answer the same.
        seen = _job(b, job)
        assert _job(a, job) == seen
        assert seen["state"] == "running"
        assert 1 <= seen["completed"] <= IN_FLIGHT - 1
        assert seen["remaining"] == COUNT - seen["completed"]
        node_a.kill()
        released.set()
        final = wait_for(
            lambda: (j := _job(b, job))["state"] not in ("queued", "running") and j,
            timeout=90,
            what="node B to take the job over and finish it",
        )
    assert (final["state"], final["completed"], final["failed"], final["remaining"]) == (
        "done",
        COUNT,
        0,
        0,
    )
    assert final["status"] == "0x0000"
    assert len(confirmed) == COUNT  # every instance arrived
    assert max(confirmed.values()) == 1  # none twice
    assert "taking over job" in node_b.log()
