"""Index deletes: a study, a series or an instance, with the derived values kept right and
the removal of the blobs made safe against a crash.

A delete goes in three steps, each of which may be the last one a crash lets happen:

1. one transaction removes the instance rows, the parents they leave empty (series, study,
   patient) and the demographics conflicts those instances brought, recomputes the derived
   values (counts, ModalitiesInStudy, SOPClassesInStudy) of the parents that remain, and
   records the removed blob keys in ``blob_deletion``;
2. the archive removes those blobs from the store;
3. one transaction forgets the recorded keys.

Rows go before blobs, so no row ever points to a missing blob. A blob left behind by a crash
after step 1 has no row, and would be re-indexed by the consistency check (bringing a deleted
instance back) if it were not recorded: the check removes recorded blobs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Row, and_, select

from pypacs.index.schema import (
    blob_deletion,
    demographics_conflict,
    instance,
    patient,
    series,
    study,
)
from pypacs.index.writes import recount, refresh_patient

_CHUNK = 500  # keys per statement when forgetting recorded blobs


@dataclass(frozen=True)
class Removed:
    """What a delete removed from the index; ``blob_keys`` are left to remove from the store."""

    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    blob_keys: list[str] = field(default_factory=list)


def delete_entity(
    conn: Connection,
    study_uid: str,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Removed | None:
    """Remove a study, one of its series, or one instance of that series (step 1 above).

    Returns None when the entity is not in the index (or not under the given parents).
    """
    found = _locate(conn, study_uid, series_uid, sop_instance_uid)
    if found is None:
        return None
    study_pk, patient_pk = int(found.study_pk), int(found.patient_pk)
    if sop_instance_uid is not None:
        which: ColumnElement[bool] = instance.c.pk == found.instance_pk
    elif series_uid is not None:
        which = instance.c.series_pk == found.series_pk
    else:
        which = instance.c.series_pk.in_(select(series.c.pk).where(series.c.study_pk == study_pk))
    keys = _remove_instances(conn, patient_pk, which)
    if series_uid is None:
        series_rows = conn.execute(
            series.delete().where(series.c.study_pk == study_pk).returning(series.c.pk)
        ).all()
        conn.execute(study.delete().where(study.c.pk == study_pk))
        return Removed(refresh_patient(conn, patient_pk), 1, len(series_rows), len(keys), keys)
    series_pk = int(found.series_pk)
    recount(conn, series_pk=series_pk, study_pk=study_pk, patient_pk=patient_pk)
    patients, studies, n_series = (
        int(conn.execute(select(table.c.pk).where(table.c.pk == pk)).first() is None)
        for table, pk in ((patient, patient_pk), (study, study_pk), (series, series_pk))
    )
    return Removed(patients, studies, n_series, len(keys), keys)


def _locate(
    conn: Connection, study_uid: str, series_uid: str | None, sop_instance_uid: str | None
) -> Row[Any] | None:
    """The primary keys of the entity's branch, when each UID names a child of the one before."""
    columns = [study.c.pk.label("study_pk"), study.c.patient_pk]
    where = [study.c.study_instance_uid == study_uid]
    source: FromClause = study
    if series_uid is not None:
        columns.append(series.c.pk.label("series_pk"))
        where.append(series.c.series_instance_uid == series_uid)
        source = source.join(series, series.c.study_pk == study.c.pk)
        if sop_instance_uid is not None:
            columns.append(instance.c.pk.label("instance_pk"))
            where.append(instance.c.sop_instance_uid == sop_instance_uid)
            source = source.join(instance, instance.c.series_pk == series.c.pk)
    return conn.execute(select(*columns).select_from(source).where(and_(*where))).first()


def _remove_instances(conn: Connection, patient_pk: int, which: ColumnElement[bool]) -> list[str]:
    """Delete the instance rows ``which`` selects; record and return their blob keys."""
    conn.execute(
        demographics_conflict.delete().where(
            demographics_conflict.c.patient_pk == patient_pk,
            demographics_conflict.c.sop_instance_uid.in_(
                select(instance.c.sop_instance_uid).where(which)
            ),
        )
    )
    keys = [
        str(key)
        for key in conn.execute(instance.delete().where(which).returning(instance.c.blob_key))
        .scalars()
        .all()
    ]
    if keys:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        conn.execute(blob_deletion.insert(), [{"blob_key": k, "requested_at": now} for k in keys])
    return keys


def recorded_deletions(conn: Connection, after: str = "", limit: int = 1000) -> list[str]:
    """Recorded blob keys (step 1) not yet forgotten (step 3), in key order after ``after``."""
    rows = conn.execute(
        select(blob_deletion.c.blob_key)
        .where(blob_deletion.c.blob_key > after)
        .order_by(blob_deletion.c.blob_key)
        .limit(limit)
    )
    return [str(key) for key in rows.scalars()]


def is_recorded(conn: Connection, blob_key: str) -> bool:
    """Whether ``blob_key`` is the blob of a deleted instance, still to be removed."""
    found = conn.execute(
        select(blob_deletion.c.pk).where(blob_deletion.c.blob_key == blob_key)
    ).first()
    return found is not None


def forget_deletions(conn: Connection, blob_keys: Sequence[str]) -> None:
    """Step 3: the blobs are gone from the store; their records go too."""
    for start in range(0, len(blob_keys), _CHUNK):
        chunk = list(blob_keys[start : start + _CHUNK])
        conn.execute(blob_deletion.delete().where(blob_deletion.c.blob_key.in_(chunk)))
