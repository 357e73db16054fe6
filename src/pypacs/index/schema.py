"""The index schema: one table per level with typed columns built from the key table.

Each level row also keeps that level's full attribute set (DICOM JSON, zlib-compressed) in
``attrs``, so a query for any attribute is answered without opening an image file.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pypacs.model.keys import keys_at
from pypacs.model.levels import Level

metadata = MetaData()


def _key_columns(level: Level) -> list[Column[object]]:
    columns: list[Column[object]] = []
    for key in keys_at(level):
        if key.column is None or key.requirement == "U":
            continue
        if key.derived and key.column.startswith("num_"):
            columns.append(Column(key.column, Integer, nullable=False, server_default="0"))
        elif key.match_column != key.column:
            columns.append(Column(key.column, String, nullable=True))
            columns.append(Column(key.match_column, String, nullable=True))
        elif key.keyword == "IssuerOfPatientID":
            # Part of the patient's identity: never NULL, or the unique constraint won't hold.
            columns.append(Column(key.column, String, nullable=False, server_default=""))
        else:
            columns.append(Column(key.column, String, nullable=True))
    return columns


def _indexes(table: str, level: Level) -> list[Index]:
    # Indexes serve matching, so they are on the match columns.
    return [
        Index(f"ix_{table}_{key.match_column}", key.match_column)
        for key in keys_at(level)
        if key.match_column is not None
        and not key.match_column.startswith("num_")
        and key.requirement != "U"
    ]


patient = Table(
    "patient",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    # PS3.4 C.6.1.1.2: the patient is identified by Patient ID within its issuer.
    Column("patient_id", String, nullable=False),
    *_key_columns(Level.PATIENT),
    Column("attrs", LargeBinary, nullable=False),
    # Empty for a patient with a Patient ID. Instances without one name nobody: each such
    # study gets a patient of its own, keyed here by its Study Instance UID, so that
    # unrelated studies are never merged under one empty patient.
    Column("identity_key", String, nullable=False, server_default=""),
    UniqueConstraint(
        "patient_id", "issuer_of_patient_id", "identity_key", name="uq_patient_identity"
    ),
    *_indexes("patient", Level.PATIENT),
)

study = Table(
    "study",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_pk", Integer, ForeignKey("patient.pk"), nullable=False, index=True),
    Column("study_instance_uid", String, nullable=False, unique=True),
    *_key_columns(Level.STUDY),
    Column("attrs", LargeBinary, nullable=False),
    *_indexes("study", Level.STUDY),
)

series = Table(
    "series",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_pk", Integer, ForeignKey("study.pk"), nullable=False, index=True),
    Column("series_instance_uid", String, nullable=False, unique=True),
    *_key_columns(Level.SERIES),
    Column("attrs", LargeBinary, nullable=False),
    *_indexes("series", Level.SERIES),
)

instance = Table(
    "instance",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False, index=True),
    Column("sop_instance_uid", String, nullable=False, unique=True),
    *_key_columns(Level.IMAGE),
    Column("transfer_syntax_uid", String, nullable=False),
    Column("blob_key", String, nullable=False, unique=True),
    Column("blob_size", Integer, nullable=False),
    Column("stored_at", String, nullable=False),
    Column("attrs", LargeBinary, nullable=False),
    *_indexes("instance", Level.IMAGE),
)

# A new study that brings demographics differing from the stored patient's: the patient
# row keeps what it had, the instance is kept as received, and the difference is recorded.
demographics_conflict = Table(
    "demographics_conflict",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_pk", Integer, ForeignKey("patient.pk"), nullable=False, index=True),
    Column("sop_instance_uid", String, nullable=False),
    Column("attribute", String, nullable=False),
    Column("stored_value", String, nullable=True),
    Column("received_value", String, nullable=True),
    Column("seen_at", String, nullable=False),
)

# Blobs of deleted instances: recorded in the transaction that removes their rows, forgotten
# once the blobs are gone. A crash in between leaves blobs that the consistency check removes
# instead of re-indexing them (index/deletes.py).
blob_deletion = Table(
    "blob_deletion",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("blob_key", String, nullable=False, unique=True),
    Column("requested_at", String, nullable=False),
)

# Studies sent to peers (remote/jobs.py): their state is kept here so that any node can
# report them. ``claimed_by`` and ``lease_until`` name the node running a job and until when
# its claim holds: a job whose lease ran out is taken over by another node (remote/jobs.py).
job = Table(
    "job",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("token", String, nullable=False),  # with pk, the job's unguessable id
    Column("peer", String, nullable=False),
    Column("study_instance_uid", String, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("status", Integer, nullable=True),  # the last DIMSE status reported
    Column("remaining", Integer, nullable=True),
    Column("completed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("warning", Integer, nullable=False, server_default="0"),
    Column("failed_uids", Text, nullable=False, server_default="[]"),  # a JSON array
    Column("error", Text, nullable=True),
    Column("created_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    Column("claimed_by", String, nullable=True),
    Column("lease_until", String, nullable=True),
    # How many times a node took the job up: 1 when it starts, one more per takeover.
    Column("attempts", Integer, nullable=False, server_default="0"),
)

# The instances a job's destination confirmed (a C-STORE response came), recorded as each
# response arrives, so that a node taking the job over sends none of them again.
job_item = Table(
    "job_item",
    metadata,
    Column("job_pk", Integer, ForeignKey("job.pk", ondelete="CASCADE"), primary_key=True),
    Column("sop_instance_uid", String, primary_key=True),
    Column("status", Integer, nullable=False),  # the C-STORE response's status
)

# HTTP users, their API tokens and their web page sessions (archive/accounts.py). Tokens
# and session ids are kept as SHA-256 hashes only; a password as its scrypt hash string.
users = Table(
    "users",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String, nullable=False, unique=True),
    Column("role", String, nullable=False),
    Column("password_hash", String, nullable=False),
    Column("created_at", String, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String, primary_key=True),  # shown to people; the token itself never is
    Column("user_name", String, nullable=False, index=True),
    Column("token_hash", String, nullable=False, unique=True),
    Column("created_at", String, nullable=False),
    Column("expires_at", String, nullable=True),  # None: never
    Column("revoked_at", String, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_hash", String, primary_key=True),
    Column("user_name", String, nullable=False, index=True),
    Column("expires_at", String, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

LEVEL_TABLES: dict[Level, Table] = {
    Level.PATIENT: patient,
    Level.STUDY: study,
    Level.SERIES: series,
    Level.IMAGE: instance,
}
