"""Failed log-ins counted per client address and per user name, to slow password guessing.

Kept in this process's memory: with several workers or nodes each counts its own, so an
address may try up to ``limit`` times per process. That bounds guessing well enough without
a shared store; the counts are lost on restart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 15 * 60
_MAX_KEYS = 100_000  # addresses and names tracked at once; past it expired ones are dropped


class FailedLogins:
    """Failures within the last WINDOW_SECONDS, by ``addr:ADDRESS`` and ``user:NAME``.

    Not thread-safe: used from the event loop only.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, name: str | None) -> int | None:
        """Seconds until the address (and the name, if any) may try again; None if now."""
        now = self._clock()
        waits = [self._wait(key, now) for key in _keys(address, name)]
        longest = max((w for w in waits if w is not None), default=None)
        return None if longest is None else max(1, math.ceil(longest))

    def failed(self, address: str, name: str | None) -> None:
        now = self._clock()
        if len(self._failures) >= _MAX_KEYS:
            self._forget_expired(now)
        for key in _keys(address, name):
            self._failures.setdefault(key, deque()).append(now)

    def _wait(self, key: str, now: float) -> float | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        # Free again once enough of the oldest failures have left the window.
        return times[len(times) - self.limit] + WINDOW_SECONDS - now

    def _forget_expired(self, now: float) -> None:
        for key in list(self._failures):
            self._wait(key, now)
        if len(self._failures) >= _MAX_KEYS:  # a flood of distinct keys: start afresh
            self._failures.clear()


def _keys(address: str, name: str | None) -> list[str]:
    return [f"addr:{address}"] + ([f"user:{name}"] if name is not None else [])
