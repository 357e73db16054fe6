"""The acceptor's connection threads: a thread whose connection ended takes the next one,
at most ``keep`` wait, and a waiting thread ends after its idle time."""

from __future__ import annotations

import threading
import time

from pypacs.net.acceptor import _Workers


def _wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_finished_thread_takes_the_next_connection() -> None:
    workers = _Workers("test-conn", keep=2, idle_seconds=30)
    seen: list[int] = []
    done = threading.Semaphore(0)

    def job() -> None:
        seen.append(threading.get_ident())
        done.release()

    workers.run(job)
    assert done.acquire(timeout=10)
    _wait_for(lambda: len(workers._idle) == 1)
    workers.run(job)
    assert done.acquire(timeout=10)
    assert seen[0] == seen[1]


def _named(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_at_most_keep_wait() -> None:
    workers = _Workers("test-keep", keep=2, idle_seconds=30)
    release = threading.Event()
    started = threading.Semaphore(0)
    idents: set[int] = set()

    def job() -> None:
        idents.add(threading.get_ident())
        started.release()
        release.wait(10)

    for _ in range(5):
        workers.run(job)
    for _ in range(5):
        assert started.acquire(timeout=10)
    assert len(idents) == 5  # busy threads are never shared
    assert _named("test-keep") == 5
    release.set()
    _wait_for(lambda: _named("test-keep") == 2)  # two wait, three end
    assert len(workers._idle) == 2


def test_a_waiting_thread_ends_after_its_idle_time() -> None:
    workers = _Workers("test-idle", keep=2, idle_seconds=0.2)
    done = threading.Event()
    workers.run(done.set)
    assert done.wait(10)
    _wait_for(lambda: _named("test-idle") == 0)
    assert workers._idle == []


def test_a_failing_job_leaves_the_thread_usable() -> None:
    workers = _Workers("test-conn", keep=1, idle_seconds=30)
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("a connection's own failure")

    workers.run(boom)
    _wait_for(lambda: len(workers._idle) == 1)
    workers.run(done.set)
    assert done.wait(10)
