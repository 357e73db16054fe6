"""Bounds on rendering: the largest frame one request may decode, the decoded bytes all
renders of the process may hold at once, and the largest viewport.

A frame is refused from its header, before anything is decoded: Rows x Columns x Samples
per Pixel x bytes a decoded sample takes (what the decoder allocates; the pipeline after it
works in blocks of rows, web/render.py). Renders past the budget of bytes in flight wait a
little for others to finish, then are answered 503: a burst of thumbnails waits its turn,
a flood of large renders does not queue up behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from pydicom.dataset import Dataset

from pypacs.web.http.errors import HttpProblem

MAX_VIEWPORT = 4096  # pixels a side of a rendered image or thumbnail (PS3.18 8.3.5.1.3)
WAIT_SECONDS = 2.0  # how long a render waits for the budget before 503


def frame_bytes(ds: Dataset) -> int:
    """Bytes one frame of ``ds`` takes decoded (1-bit data is unpacked to a byte a pixel)."""
    samples = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    return samples * max(1, (int(ds.get("BitsAllocated") or 8) + 7) // 8)


class RenderBudget:
    """The decoded bytes renders hold at once, and the most one of them may hold."""

    def __init__(self, frame_limit: int, total: int, wait: float = WAIT_SECONDS) -> None:
        self.frame_limit = frame_limit
        self.total = total
        self.wait = wait
        self._in_flight = 0
        self._free = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def decoding(self, ds: Dataset) -> Iterator[None]:
        """Hold a frame's decoded size of the budget while the body renders it.

        Raises:
            HttpProblem: 413 when the frame alone is over ``[web] render_max_frame_bytes``,
                503 when the budget stays taken by other renders for ``wait`` seconds.
        """
        need = frame_bytes(ds)
        if need > self.frame_limit:
            raise HttpProblem(
                413,
                "too-large",
                f"a {ds.Columns}x{ds.Rows} frame of this instance decodes to {need} bytes, more "
                f"than the {self.frame_limit} pypacs renders ([web] render_max_frame_bytes)",
            )
        need = min(need, self.total)  # a frame within the limit always gets its turn
        deadline = time.monotonic() + self.wait
        with self._free:
            while self._in_flight + need > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._free.wait(left):
                    raise HttpProblem(
                        503,
                        "busy",
                        f"other renders hold {self._in_flight} of the {self.total} decoded "
                        "bytes pypacs renders at once ([web] render_max_bytes_in_flight); "
                        "try again",
                    )
            self._in_flight += need
        try:
            yield
        finally:
            with self._free:
                self._in_flight -= need
                self._free.notify_all()


@cache
def budget_for(frame_limit: int, total: int) -> RenderBudget:
    """The one budget of the process for these settings (WADO-RS and WADO-URI share it)."""
    return RenderBudget(frame_limit, total)
