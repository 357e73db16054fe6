"""The archive service both front doors call: store, find, locate, delete, check.

Owns transactions (through ``index.tx``) and the durability rule. May import ``query``,
``index``, ``store``, ``model``, ``errors`` and pydicom; never ``net``, ``web`` or ``config``.
"""

from pypacs.archive.options import ArchiveOptions
from pypacs.archive.retrieve import Retrieval, StoredInstance, dataset_offset
from pypacs.archive.service import Archive, StoreResult

__all__ = [
    "Archive",
    "ArchiveOptions",
    "Retrieval",
    "StoreResult",
    "StoredInstance",
    "dataset_offset",
]
