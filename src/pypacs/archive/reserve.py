"""Room kept back on the archive's disk so that a full disk can always be repaired.

A file of ``size`` bytes, allocated up front, holds space that ingest never gets: when the
disk fills, stores are refused while deletes, which need room of their own (the index's
journal), release the reserve and go through; once deletes have freed space the reserve is
made again and stores resume. Without it a full disk locks the archive: nothing can be
stored, and nothing deleted to make room.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class SpaceReserve:
    """The reserve file; thread-safe. ``size`` 0 keeps no reserve."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._lock = threading.Lock()
        self._held = False

    @property
    def held(self) -> bool:
        return self.size == 0 or self._held

    def ensure(self) -> bool:
        """Make the reserve where missing; True when it is in place (or none is kept).

        Made only while the disk has twice its size free, so that making it never takes
        the last of the room itself.
        """
        if self.held:
            return True
        with self._lock:
            if self._held:
                return True
            if self.path.exists() and self.path.stat().st_size >= self.size:
                self._held = True
                return True
            try:
                if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                    return False
                self._allocate()
            except OSError as exc:
                if exc.errno not in _NO_ROOM:
                    log.warning("cannot make the space reserve %s: %s", self.path, exc)
                return False
            self._held = True
            log.debug("space reserve of %d bytes in place at %s", self.size, self.path)
            return True

    def release(self) -> bool:
        """Give the reserve's room back to the disk; True when there was one to give."""
        with self._lock:
            if self.size == 0 or not self.path.exists():
                self._held = False
                return False
            self.path.unlink()
            self._held = False
        log.warning(
            "disk full: space reserve %s released so that a delete can go through", self.path
        )
        return True

    def _allocate(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Really allocated (not a sparse file): the blocks are taken now.
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
