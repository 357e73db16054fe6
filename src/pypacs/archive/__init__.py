"""The archive service both front doors call: store, find, locate, delete, check, and what
goes out for a stored instance.

Owns transactions (through ``index.tx``) and the durability rule. May import ``query``,
``index``, ``store``, ``model``, ``errors`` and pydicom; never ``net``, ``web`` or ``config``.
"""

from pypacs.archive.options import ArchiveOptions
from pypacs.archive.outgoing import Form, Outgoing
from pypacs.archive.retrieve import Retrieval, StoredInstance, dataset_offset
from pypacs.archive.service import Archive, StoreResult
from pypacs.index.writes import Outcome

__all__ = [
    "Archive",
    "ArchiveOptions",
    "Form",
    "Outcome",
    "Outgoing",
    "Retrieval",
    "StoreResult",
    "StoredInstance",
    "dataset_offset",
]
