"""Consistency between the blob store and the index, for start-up and `pypacs check`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from pypacs.archive.service import Archive
from pypacs.errors import PypacsError, StoreError
from pypacs.index import reads, tx
from pypacs.index.writes import Outcome
from pypacs.store import BlobKey

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    blobs: int = 0
    reindexed: list[str] = field(default_factory=list)  # SOP Instance UIDs
    duplicates_removed: list[str] = field(default_factory=list)  # blob keys
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (blob key, reason)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, blob key)
    # Blobs without index row younger than the grace period: left for a later check.
    recent: list[str] = field(default_factory=list)  # blob keys

    @property
    def clean(self) -> bool:
        return not (self.reindexed or self.duplicates_removed or self.unreadable or self.missing)


def check(archive: Archive, *, repair: bool = True) -> CheckReport:
    """Re-index blobs that have no index row (when ``repair``); report rows without blobs.

    Memory stays bounded: the store is walked one fan-out folder at a time and the index
    is read in batches.
    """
    report = CheckReport()
    if repair and (finished := archive.finish_deletions()):
        log.warning("finished the removal of %d blobs of deleted instances", finished)
    scanned: set[str] = set()
    for prefix, keys in archive.store.scan():
        scanned.add(prefix)
        report.blobs += len(keys)
        low, high = archive.store.prefix_bounds(prefix)
        indexed = tx.read(archive.engine, partial(reads.blob_keys_between, low=low, high=high))
        for key in keys:
            if indexed.pop(str(key), None) is not None:
                continue
            if archive.is_deleted_blob(key):  # its rows were deleted: never re-index it
                continue
            if _recent(archive, key):
                report.recent.append(key)
                continue
            if repair:
                _reindex(archive, key, report)
            else:
                report.unreadable.append((key, "not indexed"))
        # What is left was indexed but was not listed: unless it was written since.
        report.missing.extend(
            (uid, key) for key, uid in sorted(indexed.items()) if not _exists(archive, key)
        )
    # Rows whose folder does not exist at all.
    after = ""
    while batch := tx.read(archive.engine, partial(reads.blob_key_batch, after=after)):
        for row_key, uid in batch:
            if row_key[: row_key.rfind("/") + 1] not in scanned:
                report.missing.append((uid, row_key))
        after = batch[-1][0]
    for uid, missing_key in report.missing:
        log.error("instance %s is indexed but its blob %s is missing", uid, missing_key)
    return report


def _recent(archive: Archive, key: BlobKey) -> bool:
    """Whether an unindexed blob is within the grace period: with several nodes on one
    object store, a blob is visible from its upload's end and indexed right after by the
    node that wrote it; re-indexing it here as well would race that node."""
    grace = archive.options.orphan_grace_seconds
    if not grace:
        return False
    try:
        return archive.store.age(key) < grace
    except StoreError:  # gone meanwhile (deleted, revoked): nothing to re-index
        return True


def _exists(archive: Archive, key: str) -> bool:
    try:
        return archive.store.exists(BlobKey(key))
    except StoreError:
        return False


def _reindex(archive: Archive, key: BlobKey, report: CheckReport) -> None:
    try:
        result = archive.reindex_blob(key)
    except PypacsError as exc:
        log.error("blob %s has no index row and cannot be indexed: %s", key, exc)
        report.unreadable.append((key, str(exc)))
        return
    if result.outcome is Outcome.DUPLICATE:
        report.duplicates_removed.append(key)
        log.warning(
            "blob %s duplicated the stored instance %s: removed", key, result.sop_instance_uid
        )
    else:
        report.reindexed.append(result.sop_instance_uid)
        log.warning("blob %s had no index row: re-indexed as %s", key, result.sop_instance_uid)
