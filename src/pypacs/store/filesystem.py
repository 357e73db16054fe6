"""Filesystem blob store: an unnamed file (or a temporary name), write, fsync, link (or
rename) under its key, fsync of the folder."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from pypacs.errors import OutOfResources, StoreError
from pypacs.store.base import BlobKey

_TMP_SUFFIX = ".tmp"
# On a folder several nodes share, a temporary file younger than this may be another node's
# write under way; older, it is the leftover of an interrupted one.
SHARED_TMP_SECONDS = 3600.0
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Unnamed files made ahead of need, per process: making a file is the costliest step of a
# small blob on ext4 (0.1 to 1 ms, it grows with the file system), so ``begin`` takes one
# made meanwhile. Each is a descriptor and an empty inode, gone with the process.
_SPARES = 4


class FilesystemStore:
    """Blobs as files under ``root``, fanned out over 256 folders as ``ab/<32 hex>``.

    Keys are random; a key is checked against its shape before use, so no key can name
    a path outside the root. The folders are made (and made durable) once, at start, so
    that a write never has to create one.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        fsync: bool = True,
        shared: bool = False,
        unnamed_files: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self._root_text = str(self.root)
        self._fsync = fsync
        # Other nodes write here too: their temporary files are not ours to judge by name.
        self._shared = shared
        # Temporary files this process is writing: not leftovers, whatever scan finds.
        self._writing: set[str] = set()
        self._writing_lock = threading.Lock()
        # fsyncs of written blobs, run while their writer checks and indexes them (``written``).
        self._syncing = ThreadPoolExecutor(4, thread_name_prefix="blob-fsync")
        # Unnamed files ready for ``begin`` (_SPARES), made by the process that uses them.
        self._spares: list[int] = []
        self._spares_pid = os.getpid()
        self._refilling = False
        self._closed = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            created = False
            for i in range(256):
                folder = self.root / f"{i:02x}"
                if not folder.is_dir():
                    folder.mkdir()
                    created = True
            if created and fsync:
                self._fsync_dir(self.root)
        except OSError as exc:
            raise StoreError(f"cannot create the blob folders under {self.root}: {exc}") from exc
        # Blobs written into unnamed files where the file system has them (else, or with
        # ``unnamed_files`` false, into temporary names).
        self._unnamed = unnamed_files and _links_unnamed(self._root_text)

    def close(self) -> None:
        """Drop the spare files (they vanish: they have no name); ``begin`` still works."""
        with self._writing_lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for fd in spares:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _path(self, key: BlobKey) -> Path:
        # Containment: the key's shape is ours ("ab/" + 32 lower-case hex digits).
        folder, _, name = key.partition("/")
        if len(name) != 32 or folder != name[:2] or not all(c in "0123456789abcdef" for c in name):
            raise StoreError(f"not a blob key of this store: {key!r}")
        return self.root / folder / name

    def _new_key(self) -> BlobKey:
        name = secrets.token_hex(16)
        return BlobKey(f"{name[:2]}/{name}")

    def begin(self) -> PendingFile:
        # Once per instance received: plain strings, and a key of our own making needs no
        # check of its shape.
        name = secrets.token_hex(16)
        key = BlobKey(f"{name[:2]}/{name}")
        folder = f"{self._root_text}/{name[:2]}"
        if self._unnamed:
            fd = self._spare()
            try:
                if fd < 0:
                    fd = os.open(self._root_text, os.O_TMPFILE | os.O_RDWR, 0o644)
            except OSError as exc:
                raise _write_error(key, exc) from exc
            return PendingFile(self, key, folder, name, fd, named=False)
        tmp_name = name + _TMP_SUFFIX
        try:
            fd = os.open(f"{folder}/{tmp_name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _write_error(key, exc) from exc
        self._started(tmp_name)
        return PendingFile(self, key, folder, name, fd, named=True)

    def _spare(self) -> int:
        """A spare unnamed file's descriptor, or -1 (``_restock`` makes more)."""
        with self._writing_lock:
            if self._spares_pid != os.getpid():  # a forked child: its copies are not to use
                inherited, self._spares, self._spares_pid = self._spares, [], os.getpid()
                for fd in inherited:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            return self._spares.pop() if self._spares else -1

    def _restock(self) -> None:
        """Make spare files in the background, once a blob is durable: making one while
        another blob's fsync runs would hold that fsync up (it waits for the journal)."""
        with self._writing_lock:
            if self._refilling or self._closed or len(self._spares) >= _SPARES:
                return
            self._refilling = True
        try:
            self._syncing.submit(self._refill)
        except RuntimeError:  # the executor is shut down: the process is stopping
            with self._writing_lock:
                self._refilling = False

    def _refill(self) -> None:
        try:
            while True:
                with self._writing_lock:
                    if self._closed or len(self._spares) >= _SPARES:
                        return
                try:
                    fd = os.open(self._root_text, os.O_TMPFILE | os.O_RDWR, 0o644)
                except OSError:  # a full disk, say: ``begin`` makes its own and says why
                    return
                with self._writing_lock:
                    if self._closed or self._spares_pid != os.getpid():
                        os.close(fd)
                        return
                    self._spares.append(fd)
        finally:
            with self._writing_lock:
                self._refilling = False

    def _started(self, tmp_name: str) -> None:
        with self._writing_lock:
            self._writing.add(tmp_name)

    def _ended(self, tmp_name: str) -> None:
        with self._writing_lock:
            self._writing.discard(tmp_name)

    def put(self, chunks: Iterable[bytes | memoryview]) -> tuple[BlobKey, int]:
        pending = self.begin()
        try:
            for chunk in chunks:
                pending.write(chunk)
            return pending.commit()
        except OSError as exc:  # from ``chunks`` (say, the spool being read)
            pending.abandon()
            raise _write_error(pending.key, exc) from exc
        except BaseException:
            pending.abandon()
            raise

    @staticmethod
    def _fsync_dir(folder: Path | str) -> None:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def open(self, key: BlobKey) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except OSError as exc:
            raise StoreError(f"cannot read blob {key}: {exc}") from exc

    def delete(self, key: BlobKey) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete blob {key}: {exc}") from exc
        if self._fsync:
            self._fsync_dir(path.parent)

    def exists(self, key: BlobKey) -> bool:
        return self._path(key).is_file()

    def size(self, key: BlobKey) -> int:
        try:
            return self._path(key).stat().st_size
        except OSError as exc:
            raise StoreError(f"cannot stat blob {key}: {exc}") from exc

    def age(self, key: BlobKey) -> float:
        try:
            return time.time() - self._path(key).stat().st_mtime
        except OSError as exc:
            raise StoreError(f"cannot stat blob {key}: {exc}") from exc

    def scan(self) -> Iterator[tuple[str, list[BlobKey]]]:
        for folder in sorted(_subdirs(self.root)):
            prefix = f"{folder}/"
            keys: list[BlobKey] = []
            with os.scandir(self.root / folder) as entries:
                for entry in entries:
                    if entry.name.endswith(_TMP_SUFFIX):
                        # An interrupted write: never acknowledged, safe to drop; unless
                        # this process is writing it now (a C-STORE during the start-up
                        # check).
                        with self._writing_lock:
                            under_way = entry.name in self._writing
                        if self._shared and not _older_than(entry, SHARED_TMP_SECONDS):
                            under_way = True  # maybe another node's
                        if not under_way:
                            _unlink_quietly(Path(entry.path))
                    elif entry.is_file():
                        keys.append(BlobKey(prefix + entry.name))
            yield prefix, sorted(keys)

    def prefix_bounds(self, prefix: str) -> tuple[str, str]:
        return prefix, prefix[:-1] + chr(ord("/") + 1)


class PendingFile:
    """A blob written into an unnamed file linked under its key by ``place`` (or, where
    the file system has no unnamed files, a temporary file of its folder, renamed)."""

    def __init__(
        self, store: FilesystemStore, key: BlobKey, folder: str, name: str, fd: int, *, named: bool
    ):
        self.key = key
        self._store, self._folder, self._fd = store, folder, fd
        self._name = name
        self._path = f"{folder}/{name}"
        self._tmp_name = name + _TMP_SUFFIX if named else None
        self._tmp = f"{folder}/{self._tmp_name}" if named else ""
        self._size = 0
        self._map: mmap.mmap | None = None
        self._committed = False
        self._synced: Future[None] | None = None

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written
        except OSError as exc:
            raise _write_error(self.key, exc) from exc

    def read_view(self) -> memoryview:
        if self._size == 0:
            return memoryview(b"")
        if self._map is None or len(self._map) != self._size:
            self._unmap()
            self._map = mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ)
        return memoryview(self._map)

    def reader(self) -> BinaryIO:
        try:
            if self._tmp_name is None:  # its own open file, at its own position
                return open(f"/proc/self/fd/{self._fd}", "rb")
            return open(self._tmp, "rb")
        except OSError as exc:
            raise StoreError(f"cannot read back blob {self.key}: {exc}") from exc

    def _unmap(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still held: freed when dropped
                self._map.close()
            self._map = None

    def written(self) -> None:
        # The data's fsync, the longest step of a commit, overlaps the caller's header scan
        # and index look-up; the rename and the folder's fsync still follow it in commit.
        if self._store._fsync and self._synced is None and self._fd >= 0:
            self._synced = self._store._syncing.submit(os.fsync, self._fd)

    def _wait_synced(self) -> None:
        """The background fsync over (its error raised): the data's, before the descriptor
        is closed; the folder's, in ``settle``."""
        synced, self._synced = self._synced, None
        if synced is not None:
            synced.result()

    def commit(self) -> tuple[BlobKey, int]:
        placed = self.place()
        self.settle()
        return placed

    def place(self) -> tuple[BlobKey, int]:
        # The data is on disk before the link (or rename) makes it visible under its key;
        # the folder's fsync, which makes that name durable, runs in the background
        # (``settle``).
        self._unmap()
        store = self._store
        try:
            if self._synced is not None:
                self._wait_synced()
            elif store._fsync:
                os.fsync(self._fd)
            if self._tmp_name is None:
                _link(self._fd, self._folder, self._name)
            else:
                os.rename(self._tmp, self._path)
        except OSError as exc:
            self.abandon()
            raise _write_error(self.key, exc) from exc
        os.close(self._fd)
        self._fd = -1
        if self._tmp_name is not None:
            store._ended(self._tmp_name)
        self._committed = True
        if store._fsync:
            self._synced = store._syncing.submit(store._fsync_dir, self._folder)
        return self.key, self._size

    def settle(self) -> None:
        try:
            self._wait_synced()
        except OSError as exc:
            raise _write_error(self.key, exc) from exc
        if self._tmp_name is None:
            self._store._restock()

    def abandon(self) -> None:
        if self._committed:  # renamed into place: nothing left to drop
            return
        self._unmap()
        with contextlib.suppress(OSError):
            self._wait_synced()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # an unnamed file is gone with it
            self._fd = -1
        if self._tmp_name is not None:
            _unlink_quietly(self._tmp)
            self._store._ended(self._tmp_name)


def _link(fd: int, folder: str, name: str) -> None:
    """Give the unnamed file open as ``fd`` its name in ``folder`` (linkat(2) following the
    descriptor's /proc link, as an unprivileged process may)."""
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _links_unnamed(root: str) -> bool:
    """Whether unnamed files can be made under ``root`` and linked (Linux 3.11+ on ext4,
    XFS, btrfs, tmpfs; not NFS); the temporary-name path otherwise."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return False
    probe = f".probe-{secrets.token_hex(8)}"
    try:
        fd = os.open(root, flag | os.O_RDWR, 0o644)
    except OSError:
        return False
    try:
        _link(fd, root, probe)
    except OSError:
        return False
    finally:
        os.close(fd)
    _unlink_quietly(f"{root}/{probe}")
    return True


def _write_error(key: BlobKey, exc: OSError) -> StoreError:
    if exc.errno in _NO_ROOM:
        return OutOfResources(f"no room left in the blob store: {exc}")
    return StoreError(f"cannot write blob {key}: {exc}")


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [e.name for e in entries if e.is_dir() and len(e.name) == 2]


def _older_than(entry: os.DirEntry[str], seconds: float) -> bool:
    try:
        return time.time() - entry.stat().st_mtime > seconds
    except OSError:  # gone meanwhile
        return False


def _unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
