"""Patients without a Patient ID (PS3.4 C.6.1.1.2 identifies a patient by Patient ID within
its issuer): each study gets a patient of its own, on every backend, and a database made
before that rule is migrated with its rows and links intact."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pypacs.archive import Archive, ArchiveOptions
from pypacs.index import schema
from pypacs.index.migrations import LATEST, migrate

from dicomgen import Spec, make_dataset, write_dataset
from helpers import table_rows


def store_without_id(archive: Archive, folder: Path, study: int, instance: int = 1) -> None:
    ds = make_dataset(Spec("X", f"Nobody^{study}", study, 1, instance))
    del ds.PatientID
    archive.store_file(write_dataset(ds, folder))


def test_studies_without_patient_id_are_not_merged(archive: Archive, tmp_path: Path) -> None:
    for study in (1, 2, 3):
        store_without_id(archive, tmp_path, study)
    store_without_id(archive, tmp_path, 1, instance=2)  # same study: same patient
    patients = table_rows(archive, schema.patient)
    assert [(p.patient_id, p.num_studies, p.num_instances) for p in patients] == [
        ("", 1, 2),
        ("", 1, 1),
        ("", 1, 1),
    ]
    studies = table_rows(archive, schema.study)
    assert sorted(s.patient_pk for s in studies) == sorted(p.pk for p in patients)


def _version_3(engine: sa.Engine) -> None:
    """The schema as version 3 had it: patient identity without identity_key."""
    old = sa.MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name != "patient":
            table.to_metadata(old)
    columns = [c._copy() for c in schema.patient.columns if c.name != "identity_key"]
    patient = sa.Table(
        "patient",
        old,
        *columns,
        sa.UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_identity"),
    )
    for index in schema.patient.indexes:
        sa.Index(index.name, *(patient.c[c.name] for c in index.columns))
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=3))
        # A patient and its study from before: they must come through with their link.
        pk = conn.execute(
            patient.insert().values(patient_id="OLD1", attrs=b"{}").returning(patient.c.pk)
        ).scalar_one()
        conn.execute(
            old.tables["study"]
            .insert()
            .values(study_instance_uid="1.2.3.4", patient_pk=pk, attrs=b"{}")
        )


def test_a_version_3_index_is_migrated(db_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(db_url)
    _version_3(engine)
    engine.dispose()
    archive = Archive.open(
        ArchiveOptions(
            db_url,
            str(tmp_path / "blobs"),
            overwrite_duplicates=False,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    try:
        store_without_id(archive, tmp_path, 1)  # opened: migrated to the latest version
        assert migrate(archive.engine) == LATEST
        store_without_id(archive, tmp_path, 2)
        patients = table_rows(archive, schema.patient)
        assert [(p.patient_id, p.identity_key != "") for p in patients] == [
            ("OLD1", False),
            ("", True),
            ("", True),
        ]
        with archive.engine.connect() as conn:
            joined = conn.execute(
                sa.select(sa.func.count())
                .select_from(schema.study)
                .join(schema.patient, schema.study.c.patient_pk == schema.patient.c.pk)
            ).scalar()
        assert joined == 3
    finally:
        archive.close()
