"""Index writes: one instance and its parents, with the derived attributes kept current.

Counts (NumberOf...Related...) and ModalitiesInStudy / SOPClassesInStudy are maintained
incrementally on insert (PS3.4 C.3.4 lists them as optional keys the SCP computes) and
recomputed from the rows when an instance moves or goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection, Integer, String, Table, and_, bindparam, func, select, update
from sqlalchemy.sql.elements import ClauseElement

from pypacs.index.prepared import Params, Prepared, Runner, Statements
from pypacs.index.schema import demographics_conflict, instance, patient, series, study

DEMOGRAPHICS = ("patient_name", "patient_birth_date", "patient_sex")


@dataclass(frozen=True)
class LevelRow:
    """Column values of one level (column name → value) and its compressed attribute set,
    made only when the level's row is written (most instances add none above their own)."""

    values: dict[str, str | None]
    packed: Callable[[], bytes]

    @property
    def attrs(self) -> bytes:
        return self.packed()


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


def _insert_of(table: Table) -> ClauseElement:
    """INSERT of every column but the key, each from a parameter of its name, returning the key."""
    return table.insert().values(_bound(table)).returning(table.c.pk)


def _bound(table: Table) -> dict[str, object]:
    """Every column but the key, bound to a parameter of its name."""
    return {c.name: bindparam(c.name) for c in table.columns if c.name != "pk"}


def _add_to_list(current: str | None, value: str | None) -> str | None:
    """Add a value to a backslash-separated set kept sorted (multi-valued CS/UI)."""
    if not value:
        return current
    values = set(current.split("\\")) if current else set()
    if value in values:
        return current
    return "\\".join(sorted(values | {value}))


# The ingest path's statements, compiled once per dialect and run on the driver's cursor
# (index/prepared.py): per instance, SQLAlchemy's execution overhead would cost more than
# the database's work.
# The study's row is read FOR UPDATE (PostgreSQL; SQLite's writer is alone anyway): its
# derived lists are computed here from what was read, so a second node adding a series to
# the same study waits for the first one's commit and reads its list, instead of writing
# over it (a lost update under READ COMMITTED).
_PATIENT_IDENTITY = and_(
    patient.c.patient_id == bindparam("patient_id"),
    patient.c.issuer_of_patient_id == bindparam("issuer_of_patient_id"),
    patient.c.identity_key == bindparam("identity_key"),
)
_STATEMENTS = Statements(
    find_instance=select(instance.c.pk, instance.c.blob_key, instance.c.series_pk).where(
        instance.c.sop_instance_uid == bindparam("sop_instance_uid")
    ),
    find_series=select(
        series.c.pk,
        study.c.pk,
        study.c.patient_pk,
        study.c.sop_classes_in_study,
        study.c.modalities_in_study,
    )
    .join(study, series.c.study_pk == study.c.pk)
    .where(series.c.series_instance_uid == bindparam("series_instance_uid"))
    .with_for_update(of=study),
    find_study=select(
        study.c.pk, study.c.patient_pk, study.c.sop_classes_in_study, study.c.modalities_in_study
    )
    .where(study.c.study_instance_uid == bindparam("study_instance_uid"))
    .with_for_update(of=study),
    find_patient=select(patient.c.pk, *(patient.c[name] for name in DEMOGRAPHICS)).where(
        _PATIENT_IDENTITY
    ),
    insert_patient=_insert_of(patient),
    insert_study=_insert_of(study),
    insert_series=_insert_of(series),
    insert_instance=instance.insert().values(_bound(instance)),
    insert_conflict=demographics_conflict.insert().values(_bound(demographics_conflict)),
    # Counts grow by what the instance adds; a derived list is written only when it changes
    # (an indexed column rewritten to its own value still costs its index pages).
    bump_series=update(series)
    .where(series.c.pk == bindparam("_pk"))
    .values(num_instances=series.c.num_instances + bindparam("_instances", type_=Integer)),
    bump_study=update(study)
    .where(study.c.pk == bindparam("_pk"))
    .values(
        num_instances=study.c.num_instances + bindparam("_instances", type_=Integer),
        num_series=study.c.num_series + bindparam("_series", type_=Integer),
    ),
    bump_study_lists=update(study)
    .where(study.c.pk == bindparam("_pk"))
    .values(
        num_instances=study.c.num_instances + bindparam("_instances", type_=Integer),
        num_series=study.c.num_series + bindparam("_series", type_=Integer),
        sop_classes_in_study=bindparam("_sop_classes", type_=String),
        modalities_in_study=bindparam("_modalities", type_=String),
    ),
    bump_patient=update(patient)
    .where(patient.c.pk == bindparam("_pk"))
    .values(
        num_instances=patient.c.num_instances + bindparam("_instances", type_=Integer),
        num_series=patient.c.num_series + bindparam("_series", type_=Integer),
        num_studies=patient.c.num_studies + bindparam("_studies", type_=Integer),
    ),
)


def upsert_instance(conn: Connection, rec: InstanceRecord, *, replace: bool) -> WriteResult:
    """Insert ``rec`` and its parents, or handle it as a duplicate of a stored instance.

    A new instance in a stored series costs five statements: its look-up, its series' (with
    the study's derived lists), its insert, and one count update per parent level.
    """
    run = Runner(conn)
    try:
        existing = run.first(_statements(conn)["find_instance"], rec.instance.values)
        if existing is None:
            return _insert(conn, run, rec)
        if not replace:
            return WriteResult(Outcome.DUPLICATE)
        instance_pk, blob_key, series_pk = existing
        _remove_instance(conn, instance_pk, series_pk)
        result = _insert(conn, run, rec)
        result.outcome = Outcome.REPLACED
        result.previous_blob = blob_key
        return result
    finally:
        run.close()


def _statements(conn: Connection) -> dict[str, Prepared]:
    return _STATEMENTS.for_dialect(conn.dialect)


def _insert(conn: Connection, run: Runner, rec: InstanceRecord) -> WriteResult:
    sql = _statements(conn)
    result = WriteResult(Outcome.STORED)
    sop_class = rec.instance.values.get("sop_class_uid")
    modality = rec.series.values.get("modality")
    found = run.first(sql["find_series"], rec.series.values)
    if found is not None:
        series_pk, study_pk, patient_pk, sop_classes, modalities = found
        _add_instance(run, sql, rec, series_pk)
        run.run(sql["bump_series"], {"_pk": series_pk, "_instances": 1})
        _bump_study(run, sql, study_pk, 0, sop_classes, modalities, sop_class, modality)
        run.run(
            sql["bump_patient"], {"_pk": patient_pk, "_instances": 1, "_series": 0, "_studies": 0}
        )
        return result
    found = run.first(sql["find_study"], rec.study.values)
    if found is not None:
        study_pk, patient_pk, sop_classes, modalities = found
        series_pk = _add_series(run, sql, rec, study_pk)
        _add_instance(run, sql, rec, series_pk)
        _bump_study(run, sql, study_pk, 1, sop_classes, modalities, sop_class, modality)
        run.run(
            sql["bump_patient"], {"_pk": patient_pk, "_instances": 1, "_series": 1, "_studies": 0}
        )
        return result
    patient_pk, result.conflicts = _patient(run, sql, rec)
    study_pk = _scalar(
        run,
        sql["insert_study"],
        {
            **rec.study.values,
            "patient_pk": patient_pk,
            "sop_classes_in_study": _add_to_list(None, sop_class),
            "modalities_in_study": _add_to_list(None, modality),
            "num_series": 1,
            "num_instances": 1,
            "attrs": rec.study.attrs,
        },
    )
    series_pk = _add_series(run, sql, rec, study_pk)
    _add_instance(run, sql, rec, series_pk)
    return result


def _scalar(run: Runner, prepared: Prepared, values: Params) -> int:
    row = run.first(prepared, values)
    assert row is not None  # an INSERT ... RETURNING returns its row
    return int(row[0])


def _add_series(run: Runner, sql: dict[str, Prepared], rec: InstanceRecord, study_pk: int) -> int:
    values = {
        **rec.series.values,
        "study_pk": study_pk,
        "num_instances": 1,
        "attrs": rec.series.attrs,
    }
    return _scalar(run, sql["insert_series"], values)


def _add_instance(
    run: Runner, sql: dict[str, Prepared], rec: InstanceRecord, series_pk: int
) -> None:
    values = {
        **rec.instance.values,
        "series_pk": series_pk,
        "blob_key": rec.blob_key,
        "blob_size": rec.blob_size,
        "stored_at": rec.stored_at,
        "attrs": rec.instance.attrs,
    }
    run.run(sql["insert_instance"], values)


def _bump_study(
    run: Runner,
    sql: dict[str, Prepared],
    study_pk: int,
    new_series: int,
    sop_classes: str | None,
    modalities: str | None,
    sop_class: str | None,
    modality: str | None,
) -> None:
    new_sop_classes = _add_to_list(sop_classes, sop_class)
    new_modalities = _add_to_list(modalities, modality)
    counts = {"_pk": study_pk, "_instances": 1, "_series": new_series}
    if new_sop_classes == sop_classes and new_modalities == modalities:
        run.run(sql["bump_study"], counts)
    else:
        lists = {"_sop_classes": new_sop_classes, "_modalities": new_modalities}
        run.run(sql["bump_study_lists"], {**counts, **lists})


def _patient(
    run: Runner, sql: dict[str, Prepared], rec: InstanceRecord
) -> tuple[int, list[tuple[str, str | None, str | None]]]:
    """The patient of a new study, inserted with its counts or counted one study more;
    demographics that differ from a stored patient's are recorded, not applied."""
    values = rec.patient.values
    patient_id = values["patient_id"] or ""
    # See schema.patient.identity_key: without a Patient ID, one patient per study.
    identity_key = "" if patient_id.strip() else str(rec.study.values["study_instance_uid"])
    ident = {
        "patient_id": patient_id,
        "issuer_of_patient_id": values["issuer_of_patient_id"] or "",
        "identity_key": identity_key,
    }
    found = run.first(sql["find_patient"], ident)
    if found is None:
        row = {**values, **ident, "num_studies": 1, "num_series": 1, "num_instances": 1}
        return _scalar(run, sql["insert_patient"], {**row, "attrs": rec.patient.attrs}), []
    patient_pk = int(found[0])
    conflicts = [
        (name, stored, values.get(name))
        for name, stored in zip(DEMOGRAPHICS, found[1:], strict=True)
        if stored != values.get(name)
    ]
    for name, old, new in conflicts:
        conflict = {
            "patient_pk": patient_pk,
            "sop_instance_uid": rec.sop_instance_uid,
            "attribute": name,
            "stored_value": old,
            "received_value": new,
            "seen_at": rec.stored_at,
        }
        run.run(sql["insert_conflict"], conflict)
    bump = {"_pk": patient_pk, "_instances": 1, "_series": 1, "_studies": 1}
    run.run(sql["bump_patient"], bump)
    return patient_pk, conflicts


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


def is_stored(conn: Connection, sop_instance_uid: str) -> bool:
    """Whether an instance of this UID is indexed (the duplicate check before a store)."""
    run = Runner(conn)
    try:
        found = run.first(
            _statements(conn)["find_instance"], {"sop_instance_uid": sop_instance_uid}
        )
    finally:
        run.close()
    return found is not None
