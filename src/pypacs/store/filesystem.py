"""Filesystem blob store: temp name, write, fsync, rename, fsync of the folder."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pypacs.errors import OutOfResources, StoreError
from pypacs.store.base import BlobKey

_TMP_SUFFIX = ".tmp"
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class FilesystemStore:
    """Blobs as files under ``root``, fanned out over 256 folders as ``ab/<32 hex>``.

    Keys are random; a key is checked against its shape before use, so no key can name
    a path outside the root. The folders are made (and made durable) once, at start, so
    that a write never has to create one.
    """

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self._fsync = fsync
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

    def _path(self, key: BlobKey) -> Path:
        # Containment: the key's shape is ours ("ab/" + 32 lower-case hex digits).
        folder, _, name = key.partition("/")
        if len(name) != 32 or folder != name[:2] or not all(c in "0123456789abcdef" for c in name):
            raise StoreError(f"not a blob key of this store: {key!r}")
        return self.root / folder / name

    def put(self, chunks: Iterable[bytes | memoryview]) -> tuple[BlobKey, int]:
        name = secrets.token_hex(16)
        key = BlobKey(f"{name[:2]}/{name}")
        path = self._path(key)
        folder = path.parent
        tmp = folder / (name + _TMP_SUFFIX)
        try:
            size = 0
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                        size += written
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            if self._fsync:
                self._fsync_dir(folder)
        except OSError as exc:
            _unlink_quietly(tmp)
            if exc.errno in _NO_ROOM:
                raise OutOfResources(f"no room left in the blob store: {exc}") from exc
            raise StoreError(f"cannot write blob {key}: {exc}") from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return key, size

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
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

    def scan(self) -> Iterator[tuple[str, list[BlobKey]]]:
        for folder in sorted(_subdirs(self.root)):
            prefix = f"{folder}/"
            keys: list[BlobKey] = []
            with os.scandir(self.root / folder) as entries:
                for entry in entries:
                    if entry.name.endswith(_TMP_SUFFIX):
                        # An interrupted write: never acknowledged, safe to drop.
                        _unlink_quietly(Path(entry.path))
                    elif entry.is_file():
                        keys.append(BlobKey(prefix + entry.name))
            yield prefix, sorted(keys)

    def prefix_bounds(self, prefix: str) -> tuple[str, str]:
        return prefix, prefix[:-1] + chr(ord("/") + 1)


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [e.name for e in entries if e.is_dir() and len(e.name) == 2]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
