"""Index writes: one instance and its parents, with the derived attributes kept current.

Counts (NumberOf...Related...) and ModalitiesInStudy / SOPClassesInStudy are maintained
incrementally on insert (PS3.4 C.3.4 lists them as optional keys the SCP computes) and
recomputed from the rows when an instance moves or goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection, Integer, String, Table, and_, bindparam, func, select, update

from pypacs.index.schema import demographics_conflict, instance, patient, series, study

DEMOGRAPHICS = ("patient_name", "patient_birth_date", "patient_sex")


@dataclass(frozen=True)
class LevelRow:
    """Column values of one level (column name → value) and its compressed attribute set."""

    values: dict[str, str | None]
    attrs: bytes


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index keeps of one received instance."""

    patient: LevelRow
    study: LevelRow
    series: LevelRow
    instance: LevelRow
    blob_key: str
    blob_size: int
    stored_at: str

    @property
    def sop_instance_uid(self) -> str:
        return str(self.instance.values["sop_instance_uid"])


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the stored copy was kept
    REPLACED = "replaced"  # the new copy replaced the stored one


@dataclass
class WriteResult:
    outcome: Outcome
    previous_blob: str | None = None
    conflicts: list[tuple[str, str | None, str | None]] = field(default_factory=list)


def _insert_returning_pk(conn: Connection, table: Table, values: dict[str, object]) -> int:
    return int(conn.execute(table.insert().values(**values).returning(table.c.pk)).scalar_one())


def _patient_pk(conn: Connection, rec: InstanceRecord) -> tuple[int, bool]:
    values = rec.patient.values
    patient_id = values["patient_id"] or ""
    # See schema.patient.identity_key: without a Patient ID, one patient per study.
    identity_key = "" if patient_id.strip() else str(rec.study.values["study_instance_uid"])
    ident = and_(
        patient.c.patient_id == patient_id,
        patient.c.issuer_of_patient_id == (values["issuer_of_patient_id"] or ""),
        patient.c.identity_key == identity_key,
    )
    pk = conn.execute(select(patient.c.pk).where(ident)).scalar()
    if pk is not None:
        return int(pk), False
    row = dict(values, patient_id=patient_id, identity_key=identity_key)
    row["issuer_of_patient_id"] = values["issuer_of_patient_id"] or ""
    return _insert_returning_pk(conn, patient, {**row, "attrs": rec.patient.attrs}), True


def _record_conflicts(
    conn: Connection, patient_pk: int, rec: InstanceRecord
) -> list[tuple[str, str | None, str | None]]:
    stored = conn.execute(
        select(*(patient.c[name] for name in DEMOGRAPHICS)).where(patient.c.pk == patient_pk)
    ).one()
    conflicts = [
        (name, stored_value, rec.patient.values.get(name))
        for name, stored_value in zip(DEMOGRAPHICS, stored, strict=True)
        if stored_value != rec.patient.values.get(name)
    ]
    for name, old, new in conflicts:
        conn.execute(
            demographics_conflict.insert().values(
                patient_pk=patient_pk,
                sop_instance_uid=rec.sop_instance_uid,
                attribute=name,
                stored_value=old,
                received_value=new,
                seen_at=rec.stored_at,
            )
        )
    return conflicts


def _add_to_list(current: str | None, value: str | None) -> str | None:
    """Add a value to a backslash-separated set kept sorted (multi-valued CS/UI)."""
    if not value:
        return current
    values = set(current.split("\\")) if current else set()
    if value in values:
        return current
    return "\\".join(sorted(values | {value}))


# Statements of the ingest path are built once: building and cache-keying a statement per
# call would cost more than executing it.
_FIND_INSTANCE = select(instance.c.pk, instance.c.blob_key, instance.c.series_pk).where(
    instance.c.sop_instance_uid == bindparam("_uid")
)
_FIND_SERIES = (
    select(
        series.c.pk,
        study.c.pk,
        study.c.patient_pk,
        study.c.sop_classes_in_study,
        study.c.modalities_in_study,
    )
    .join(study, series.c.study_pk == study.c.pk)
    .where(series.c.series_instance_uid == bindparam("_uid"))
)
_FIND_STUDY = select(
    study.c.pk, study.c.patient_pk, study.c.sop_classes_in_study, study.c.modalities_in_study
).where(study.c.study_instance_uid == bindparam("_uid"))
_INSERT_STUDY = study.insert().returning(study.c.pk)
_INSERT_SERIES = series.insert().returning(series.c.pk)
_INSERT_INSTANCE = instance.insert()
_BUMP_SERIES = (
    update(series)
    .where(series.c.pk == bindparam("_pk"))
    .values(num_instances=series.c.num_instances + 1)
)
_BUMP_STUDY = (
    update(study)
    .where(study.c.pk == bindparam("_pk"))
    .values(
        num_instances=study.c.num_instances + 1,
        num_series=study.c.num_series + bindparam("_new_series", type_=Integer),
        sop_classes_in_study=bindparam("_sop_classes", type_=String),
        modalities_in_study=bindparam("_modalities", type_=String),
    )
)
_BUMP_PATIENT = (
    update(patient)
    .where(patient.c.pk == bindparam("_pk"))
    .values(
        num_instances=patient.c.num_instances + 1,
        num_series=patient.c.num_series + bindparam("_new_series", type_=Integer),
        num_studies=patient.c.num_studies + bindparam("_new_study", type_=Integer),
    )
)


def upsert_instance(conn: Connection, rec: InstanceRecord, *, replace: bool) -> WriteResult:
    """Insert ``rec`` and its parents, or handle it as a duplicate of a stored instance."""
    existing = conn.execute(_FIND_INSTANCE, {"_uid": rec.sop_instance_uid}).first()
    if existing is not None:
        if not replace:
            return WriteResult(Outcome.DUPLICATE)
        _remove_instance(conn, existing.pk, existing.series_pk)
        result = _insert(conn, rec)
        result.outcome = Outcome.REPLACED
        result.previous_blob = existing.blob_key
        return result
    return _insert(conn, rec)


def _insert(conn: Connection, rec: InstanceRecord) -> WriteResult:
    result = WriteResult(Outcome.STORED)
    found = conn.execute(_FIND_SERIES, {"_uid": rec.series.values["series_instance_uid"]}).first()
    new_series = new_study = False
    if found is not None:
        series_pk, study_pk, patient_pk, sop_classes, modalities = found
    else:
        new_series = True
        study_uid = rec.study.values["study_instance_uid"]
        study_row = conn.execute(_FIND_STUDY, {"_uid": study_uid}).first()
        if study_row is not None:
            study_pk, patient_pk, sop_classes, modalities = study_row
        else:
            new_study = True
            patient_pk, new_patient = _patient_pk(conn, rec)
            if not new_patient:
                result.conflicts = _record_conflicts(conn, patient_pk, rec)
            study_pk = conn.execute(
                _INSERT_STUDY,
                {**rec.study.values, "patient_pk": patient_pk, "attrs": rec.study.attrs},
            ).scalar_one()
            sop_classes, modalities = None, None
        modalities = _add_to_list(modalities, rec.series.values.get("modality"))
        series_pk = conn.execute(
            _INSERT_SERIES, {**rec.series.values, "study_pk": study_pk, "attrs": rec.series.attrs}
        ).scalar_one()
    conn.execute(
        _INSERT_INSTANCE,
        {
            **rec.instance.values,
            "series_pk": series_pk,
            "blob_key": rec.blob_key,
            "blob_size": rec.blob_size,
            "stored_at": rec.stored_at,
            "attrs": rec.instance.attrs,
        },
    )
    conn.execute(_BUMP_SERIES, {"_pk": series_pk})
    conn.execute(
        _BUMP_STUDY,
        {
            "_pk": study_pk,
            "_new_series": int(new_series),
            "_sop_classes": _add_to_list(sop_classes, rec.instance.values.get("sop_class_uid")),
            "_modalities": modalities,
        },
    )
    conn.execute(
        _BUMP_PATIENT,
        {"_pk": patient_pk, "_new_series": int(new_series), "_new_study": int(new_study)},
    )
    return result


def _remove_instance(conn: Connection, instance_pk: int, series_pk: int) -> None:
    """Delete an instance row, drop parents left empty, and recompute the derived values."""
    study_pk, patient_pk = conn.execute(
        select(study.c.pk, study.c.patient_pk)
        .join(series, series.c.study_pk == study.c.pk)
        .where(series.c.pk == series_pk)
    ).one()
    conn.execute(instance.delete().where(instance.c.pk == instance_pk))
    recount(conn, series_pk=series_pk, study_pk=study_pk, patient_pk=patient_pk)


def recount(conn: Connection, *, series_pk: int, study_pk: int, patient_pk: int) -> None:
    """Recompute the derived attributes of one branch from its rows; prune empty parents."""
    n = conn.execute(select(func.count()).where(instance.c.series_pk == series_pk)).scalar_one()
    if n == 0:
        conn.execute(series.delete().where(series.c.pk == series_pk))
    else:
        conn.execute(update(series).where(series.c.pk == series_pk).values(num_instances=n))
    in_study = (
        select(instance.c.sop_class_uid, series.c.modality, series.c.pk)
        .join(series, instance.c.series_pk == series.c.pk)
        .where(series.c.study_pk == study_pk)
    ).subquery()
    rows = conn.execute(
        select(in_study.c.sop_class_uid, in_study.c.modality, in_study.c.pk).distinct()
    ).all()
    if not rows:
        conn.execute(study.delete().where(study.c.pk == study_pk))
    else:
        n_instances = conn.execute(
            select(func.count())
            .select_from(instance.join(series, instance.c.series_pk == series.c.pk))
            .where(series.c.study_pk == study_pk)
        ).scalar_one()
        conn.execute(
            update(study)
            .where(study.c.pk == study_pk)
            .values(
                num_series=len({r.pk for r in rows}),
                num_instances=n_instances,
                modalities_in_study="\\".join(sorted({r.modality for r in rows if r.modality}))
                or None,
                sop_classes_in_study="\\".join(
                    sorted({r.sop_class_uid for r in rows if r.sop_class_uid})
                )
                or None,
            )
        )
    refresh_patient(conn, patient_pk)


def refresh_patient(conn: Connection, patient_pk: int) -> int:
    """Recompute a patient's counts from its studies, or remove it if it has none left;
    return the number of patients removed (0 or 1)."""
    n_studies, n_series, n_instances = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(study.c.num_series), 0),
            func.coalesce(func.sum(study.c.num_instances), 0),
        ).where(study.c.patient_pk == patient_pk)
    ).one()
    if n_studies:
        conn.execute(
            update(patient)
            .where(patient.c.pk == patient_pk)
            .values(num_studies=n_studies, num_series=n_series, num_instances=n_instances)
        )
        return 0
    conn.execute(
        demographics_conflict.delete().where(demographics_conflict.c.patient_pk == patient_pk)
    )
    conn.execute(patient.delete().where(patient.c.pk == patient_pk))
    return 1
