"""What the archive's administrator reviews: instances received per period, and the
demographics conflicts recorded when a study brought other patient details."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select

from pypacs.index.schema import demographics_conflict, instance, patient

# stored_at is an ISO 8601 UTC text ("2024-05-01T12:34:56.789+00:00"): its first 13
# characters name the hour, its first 16 the minute.
BUCKET_CHARS = {"minute": 16, "hour": 13}


def received_per_bucket(conn: Connection, since: str, bucket: str) -> dict[str, int]:
    """Instances stored at or after ``since`` (an ISO text), counted by minute or hour (the
    bucket's ISO prefix → count). stored_at has no index: this reads the instance table."""
    prefix = func.substr(instance.c.stored_at, 1, BUCKET_CHARS[bucket])
    rows = conn.execute(
        select(prefix.label("bucket"), func.count())
        .where(instance.c.stored_at >= since)
        .group_by(prefix)
    )
    return {str(name): int(n) for name, n in rows}


@dataclass(frozen=True)
class Conflict:
    """One attribute of one received instance that differed from the stored patient's."""

    pk: int
    patient_id: str
    patient_name: str | None
    sop_instance_uid: str
    attribute: str
    stored_value: str | None
    received_value: str | None
    seen_at: str


def conflicts_statement(limit: int, offset: int) -> Select[Any]:
    """The recorded demographics conflicts, the newest first."""
    return (
        select(
            demographics_conflict.c.pk,
            patient.c.patient_id,
            patient.c.patient_name,
            demographics_conflict.c.sop_instance_uid,
            demographics_conflict.c.attribute,
            demographics_conflict.c.stored_value,
            demographics_conflict.c.received_value,
            demographics_conflict.c.seen_at,
        )
        .select_from(
            demographics_conflict.join(patient, demographics_conflict.c.patient_pk == patient.c.pk)
        )
        .order_by(demographics_conflict.c.pk.desc())
        .limit(limit)
        .offset(offset)
    )


def conflicts(conn: Connection, limit: int, offset: int) -> tuple[int, list[Conflict]]:
    """The number of recorded conflicts, and one page of them (the newest first)."""
    total = int(conn.execute(select(func.count()).select_from(demographics_conflict)).scalar_one())
    page = [Conflict(**row) for row in _mappings(conn, conflicts_statement(limit, offset))]
    return total, page


def _mappings(conn: Connection, statement: Select[Any]) -> Iterator[dict[str, Any]]:
    for row in conn.execute(statement).mappings():
        yield dict(row)
