"""Blob store backends by URL scheme; optional backends are imported lazily."""

from __future__ import annotations

from pathlib import Path

from pypacs.errors import StoreError
from pypacs.store.base import BlobStore


def open_store(
    location: str | Path,
    *,
    fsync: bool = True,
    shared: bool = False,
    endpoint_url: str = "",
    region: str = "",
) -> BlobStore:
    """Open the store at ``location``: a folder path, a ``file://`` URL, or
    ``s3://BUCKET/PREFIX`` (an S3-compatible object store at ``endpoint_url``, in
    ``region``; the ``s3`` extra). ``shared``: other nodes write to the folder too, so a
    scan leaves temporary files younger than an hour alone.

    Raises:
        StoreError: unknown scheme, the folder cannot be created, the ``s3`` extra is not
            installed, or the bucket cannot be used.
    """
    text = str(location)
    if "://" not in text:
        from pypacs.store.filesystem import FilesystemStore

        return FilesystemStore(text, fsync=fsync, shared=shared)
    scheme, _, rest = text.partition("://")
    if scheme == "file":
        from pypacs.store.filesystem import FilesystemStore

        return FilesystemStore(rest, fsync=fsync, shared=shared)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"{text!r}: expected s3://BUCKET/PREFIX")
        try:
            from pypacs.store.s3 import S3Store
        except ImportError as exc:
            raise StoreError(
                f"{text!r} needs the s3 extra (pip install 'pypacs[s3]'): {exc}"
            ) from exc
        return S3Store(bucket, prefix, endpoint_url=endpoint_url, region=region)
    raise StoreError(
        f"unknown blob store scheme {scheme!r} in {text!r}: expected a folder, file:// or s3://"
    )
