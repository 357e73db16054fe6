"""What the archive needs to know, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchiveOptions:
    """Built by config from the settings, whose table holds the defaults."""

    database_url: str
    blob_root: str
    # A SOP Instance UID received again: keep the stored copy (False) or replace it (True).
    overwrite_duplicates: bool
    # Room kept back on the disk so that deletes work when it is full (archive/reserve.py);
    # 0: none.
    reserve_path: str
    reserve_bytes: int
    # The largest instance a receive takes (bytes of its data set); 0: no bound.
    max_instance_bytes: int
    # Where the blobs are when not files under blob_root: "s3://BUCKET/PREFIX" ([storage]
    # url), at s3_endpoint_url in s3_region ([storage.s3]).
    blob_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    # A blob without index row younger than this is not re-indexed by the check: another
    # node may have written it and be about to index it ([storage.s3] orphan_grace_seconds).
    orphan_grace_seconds: float = 0
    # fsync blobs and folders before acknowledging; not a setting: only tests of other
    # things turn it off.
    fsync: bool = True
    # Connections each process keeps to a PostgreSQL index ([database] pool_size).
    database_pool_size: int = 5
    # How long a node's claim on a job it runs lasts unless renewed ([retrieve]
    # job_lease_seconds); then another node takes the job over.
    job_lease_seconds: float = 30.0
