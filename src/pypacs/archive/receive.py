"""An instance received a fragment at a time, written straight into the file that becomes
its blob: no second copy in memory, whatever its size."""

from __future__ import annotations

from collections.abc import Collection
from types import TracebackType
from typing import TYPE_CHECKING

from pypacs.archive.ingest import Expectation, scan_header
from pypacs.errors import OutOfResources
from pypacs.store.base import PendingBlob

if TYPE_CHECKING:
    from pypacs.archive.service import Archive, StoreResult

# Instances up to this size are also kept in memory as they arrive, and their header is
# scanned from there; larger ones are scanned from a map of their file.
_IN_MEMORY = 256 * 1024


class Receiving:
    """One instance being received: ``write`` its data set's pieces in order, then ``finish``;
    leaving the ``with`` block without ``finish`` (an aborted transfer) leaves no file."""

    def __init__(self, archive: Archive, pending: PendingBlob, head: bytes, limit: int) -> None:
        self._archive = archive
        self._pending = pending
        self._limit = limit + len(head) if limit else 0  # the bound is on the data set
        self._memory: bytearray | None = bytearray()
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
        """Bytes written so far, the File Meta Information included."""
        return self._pending.size

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
        if self._limit and self._pending.size + len(data) > self._limit:
            self.abandon()
            raise OutOfResources(
                f"instance larger than [storage] max_instance_bytes ({self._limit} bytes)"
            )
        try:
            self._pending.write(data)
        except BaseException:
            self.abandon()
            raise
        if self._memory is not None:
            if len(self._memory) + len(data) <= _IN_MEMORY:
                self._memory += data
            else:
                self._memory = None

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
            self._pending.written()  # its fsync may run while the header is checked
            if self._memory is not None:
                header = scan_header(self._memory, expect)
            else:
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
        self._pending.abandon()
