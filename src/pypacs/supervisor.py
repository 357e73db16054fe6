"""Several worker processes over the same listening sockets, kept running by their parent.

The parent binds the ports and runs the start-up check; then it forks the workers (each makes
its own index engine and archive: nothing made before the fork is used after it), waits until
every one of them is serving, restarts one that dies, and on SIGTERM or SIGINT stops them all.
A worker dies with its parent (Linux' parent-death signal), so a killed server never leaves
workers behind holding its ports or writing into its archive.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pypacs.errors import PypacsError

log = logging.getLogger("pypacs.server")

# What a worker runs: it calls ``ready()`` once it serves, and returns its exit status.
Work = Callable[[Callable[[], None]], int]

_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
_TICK = 0.2  # seconds between two looks at the workers when no signal came
_STOP_GRACE = 20.0  # seconds a worker has to finish after SIGTERM, then SIGKILL
_RESTART_PAUSE = 1.0  # a worker that lived less than this is restarted after the rest of it
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerFailed(PypacsError):
    """A worker died before it could serve: the server does not start."""


@dataclass
class _Slot:
    number: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    restart_at: float | None = None


def worker_count(configured: int) -> int:
    """``[server] workers``: 0 means one per core."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def share(total: int, workers: int) -> int:
    """One worker's even share of a cap the whole server has, rounded up."""
    return max(1, -(-total // workers))


class Supervisor:
    """Forks ``count`` workers running ``work``; ``on_ready`` runs once all of them serve."""

    def __init__(self, count: int, work: Work, on_ready: Callable[[], None]) -> None:
        self.slots = [_Slot(n) for n in range(1, count + 1)]
        self.work = work
        self.on_ready = on_ready
        self._announced = False
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop every worker and return.

        Raises:
            WorkerFailed: a worker died before every worker was serving.
        """
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            for slot in self.slots:
                self._start(slot)
            while True:
                received = signal.sigtimedwait(_WATCHED, _TICK)
                if received is not None and received.si_signo != signal.SIGCHLD:
                    log.info("signal %d: stopping the workers", received.si_signo)
                    return
                self._read_ready()
                self._reap()
                self._restart_due()
        finally:
            self._stop_all()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            os.close(self._ready_r)
            os.close(self._ready_w)

    def _start(self, slot: _Slot) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            self._child(slot, parent)
        slot.pid, slot.started, slot.ready, slot.restart_at = pid, time.monotonic(), False, None
        log.info("worker %d started (pid %d)", slot.number, pid)

    def _child(self, slot: _Slot, parent: int) -> None:
        status = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            _die_with(parent)
            os.close(self._ready_r)
            ready_w = self._ready_w

            def ready() -> None:
                os.write(ready_w, bytes([slot.number]))

            status = self.work(ready)
        except BaseException:
            log.exception("worker %d failed", slot.number)
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _read_ready(self) -> None:
        while True:
            try:
                data = os.read(self._ready_r, 256)
            except BlockingIOError:
                break
            for number in data:
                self.slots[number - 1].ready = True
            if len(data) < 256:
                break
        if not self._announced and all(slot.ready for slot in self.slots):
            self._announced = True
            self.on_ready()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            how = _ended(status)
            slot.pid = 0
            if not self._announced and not slot.ready:
                raise WorkerFailed(f"worker {slot.number} {how} before it could serve")
            lived = time.monotonic() - slot.started
            slot.restart_at = time.monotonic() + max(0.0, _RESTART_PAUSE - lived)
            log.warning("worker %d (pid %d) %s; restarting it", slot.number, pid, how)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid == 0 and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _stop_all(self) -> None:
        running = {slot.pid: slot for slot in self.slots if slot.pid}
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while running and time.monotonic() < deadline:
            for pid in list(running):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                running.pop(pid).pid = 0
            time.sleep(0.05)
        for pid, slot in running.items():
            log.warning(
                "worker %d (pid %d) did not stop in %.0f s: killed", slot.number, pid, _STOP_GRACE
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux); exit if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
