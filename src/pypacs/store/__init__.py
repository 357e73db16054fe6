"""Where the bytes live: the BlobStore interface and its backends.

May import ``pypacs.errors`` and the standard library only; never DICOM or SQL.
"""

from pypacs.store.base import BlobKey, BlobStore
from pypacs.store.registry import open_store

__all__ = ["BlobKey", "BlobStore", "open_store"]
