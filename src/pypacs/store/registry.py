"""Blob store backends by URL scheme; optional backends are imported lazily."""

from __future__ import annotations

from pathlib import Path

from pypacs.errors import StoreError
from pypacs.store.base import BlobStore


def open_store(location: str | Path, *, fsync: bool = True) -> BlobStore:
    """Open the store at ``location``: a folder path or a ``file://`` URL.

    Raises:
        StoreError: unknown scheme or the folder cannot be created.
    """
    text = str(location)
    if "://" not in text:
        from pypacs.store.filesystem import FilesystemStore

        return FilesystemStore(text, fsync=fsync)
    scheme, _, rest = text.partition("://")
    if scheme == "file":
        from pypacs.store.filesystem import FilesystemStore

        return FilesystemStore(rest, fsync=fsync)
    raise StoreError(
        f"unknown blob store scheme {scheme!r} in {text!r}: expected a folder or file://"
    )
