"""An instance received a fragment at a time: held in memory while it is small, written
straight into the file that becomes its blob once it is not; never a second copy of a large
one in memory, whatever its size."""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import TracebackType
from typing import TYPE_CHECKING

from pypacs.archive.ingest import Expectation, scan_header
from pypacs.errors import OutOfResources
from pypacs.store.base import PendingBlob

if TYPE_CHECKING:
    from pypacs.archive.service import Archive, StoreResult

# Instances up to this size are held in memory as they arrive and written into their file
# once whole (``finish``); larger ones are written as they arrive and scanned from a map of
# their file.
_IN_MEMORY = 256 * 1024


def _written(begin: Callable[[], PendingBlob], data: bytearray) -> PendingBlob:
    """A blob holding ``data``, on its way to being durable (``PendingBlob.written``)."""
    pending = begin()
    try:
        pending.write(memoryview(data))
        pending.written()
    except BaseException:
        pending.abandon()
        raise
    return pending


class Receiving:
    """One instance being received: ``write`` its data set's pieces in order, then ``finish``;
    leaving the ``with`` block without ``finish`` (an aborted transfer) leaves no file."""

    def __init__(
        self,
        archive: Archive,
        begin: Callable[[], PendingBlob],
        head: bytes,
        limit: int,
    ) -> None:
        self._archive = archive
        self._begin = begin
        self._pending: PendingBlob | None = None  # the file, once the instance outgrew memory
        self._limit = limit + len(head) if limit else 0  # the bound is on the data set
        self._memory: bytearray | None = bytearray()
        self._size = 0
        self._open = True
        self.write(head)

    def __enter__(self) -> Receiving:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abandon()

    @property
    def size(self) -> int:
        """Bytes received so far, the File Meta Information included."""
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        """Append the next piece of the data set.

        Raises:
            OutOfResources: the instance grows past [storage] max_instance_bytes (PS3.4
                B.2.3: Refused, Out of Resources, A700) or the disk is full; what was
                written is removed and every later write is refused too.
            StoreError: the blob could not be written; what was written is removed.
        """
        if not self._open:
            raise OutOfResources("this instance was refused or has ended")
        if self._limit and self._size + len(data) > self._limit:
            self.abandon()
            raise OutOfResources(
                f"instance larger than [storage] max_instance_bytes ({self._limit} bytes)"
            )
        try:
            if self._memory is not None and len(self._memory) + len(data) <= _IN_MEMORY:
                self._memory += data
            else:
                if self._pending is None:  # too large for memory: on to its file
                    self._pending = self._begin()
                    if self._memory:
                        self._pending.write(memoryview(self._memory))
                    self._memory = None
                self._pending.write(data)
        except BaseException:
            self.abandon()
            raise
        self._size += len(data)

    def finish(
        self,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        allowed_syntaxes: Collection[str] | None = None,
    ) -> StoreResult:
        """Check the received instance (one scan of its header), make its file durable and
        index it: as ``Archive.store_instance`` does, with the same answers.

        Raises:
            InvalidInstance, OutOfResources, StoreError: as for ``store_instance``; the
                file is removed.
        """
        if not self._open:
            raise OutOfResources("this instance was refused or has ended")
        expect = Expectation(expected_sop_class, expected_sop_instance, None, allowed_syntaxes)
        try:
            if self._memory is not None:
                # Its file first: the fsync, the slowest step, then runs in the background
                # while the header is scanned. (One thread does the rest: the scan and the
                # look-ups are Python, which a second thread would only wait for.)
                self._pending = _written(self._begin, self._memory)
                header = scan_header(self._memory, expect)
                self._memory = None
            else:
                assert self._pending is not None
                self._pending.written()  # its fsync may run while the header is checked
                with self._pending.reader() as fallback:
                    header = scan_header(self._pending.read_view(), expect, fallback=fallback)
            self._open = False
            return self._archive._store_received(header, self._pending)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Drop the instance: no file is left; never raises."""
        self._open = False
        self._memory = None
        if self._pending is not None:
            self._pending.abandon()
