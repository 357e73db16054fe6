"""The index contract: the same behaviour on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from pypacs.archive import Archive, ArchiveOptions
from pypacs.archive.ingest import configure_pydicom
from pypacs.errors import OutOfResources
from pypacs.index import schema
from pypacs.index.migrations import LATEST, current_version, migrate
from pypacs.index.writes import Outcome

from dicomgen import Spec, write
from helpers import table_rows


def store(archive: Archive, tmp_path: Path, spec: Spec) -> Outcome:
    return archive.store_file(write(spec, tmp_path)).outcome


def test_migrations_reach_latest_and_are_idempotent(archive: Archive) -> None:
    assert migrate(archive.engine) == LATEST
    with archive.engine.connect() as conn:
        assert current_version(conn) == LATEST
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.schema_version)).scalar()
            == 1
        )


def test_one_row_per_level_and_counts(archive: Archive, tmp_path: Path) -> None:
    for study in (1, 2):
        for series, modality in ((1, "CT"), (2, "MR")):
            for inst in (1, 2, 3):
                spec = Spec("PAT1", "Smith^Ann", study, series, inst, modality=modality)
                assert store(archive, tmp_path, spec) is Outcome.STORED
    store(archive, tmp_path, Spec("PAT2", "Jones^Bob", 1, 1, 1, modality="MR"))

    patients = table_rows(archive, schema.patient)
    assert [(p.patient_id, p.num_studies, p.num_series, p.num_instances) for p in patients] == [
        ("PAT1", 2, 4, 12),
        ("PAT2", 1, 1, 1),
    ]
    studies = table_rows(archive, schema.study)
    assert [(s.num_series, s.num_instances, s.modalities_in_study) for s in studies] == [
        (2, 6, "CT\\MR"),
        (2, 6, "CT\\MR"),
        (1, 1, "MR"),
    ]
    assert studies[0].sop_classes_in_study == "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4"
    assert [s.num_instances for s in table_rows(archive, schema.series)] == [3, 3, 3, 3, 1]
    assert len(table_rows(archive, schema.instance)) == 13


def test_columns_hold_the_received_values(archive: Archive, tmp_path: Path) -> None:
    spec = Spec(
        "ID-7",
        "Müller^Jürgen",
        3,
        4,
        5,
        charset="ISO_IR 100",
        issuer="HOSP",
        study_date="20231231",
        birth_date="19491102",
        sex="M",
    )
    store(archive, tmp_path, spec)
    (p,) = table_rows(archive, schema.patient)
    assert (
        p.patient_id,
        p.issuer_of_patient_id,
        p.patient_name,
        p.patient_birth_date,
        p.patient_sex,
    ) == (
        "ID-7",
        "HOSP",
        "Müller^Jürgen",
        "19491102",
        "M",
    )
    (s,) = table_rows(archive, schema.study)
    assert (s.study_date, s.study_time, s.accession_number, s.study_id) == (
        "20231231",
        "101500.25",
        "ACC0003",
        "S3",
    )
    assert (s.referring_physician_name, s.study_description) == ("Doe^Referring", "Study 3 of ID-7")
    (se,) = table_rows(archive, schema.series)
    assert (
        se.modality,
        se.series_number,
        se.body_part_examined,
        se.institution_name,
        se.station_name,
    ) == (
        "CT",
        "4",
        "CHEST",
        "Test Hospital",
        "STATION1",
    )
    (i,) = table_rows(archive, schema.instance)
    assert (i.instance_number, i.sop_class_uid, i.transfer_syntax_uid) == (
        "5",
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.1.2.1",
    )


def test_attribute_sets_are_split_by_level_without_bulk_data(
    archive: Archive, tmp_path: Path
) -> None:
    from pypacs.archive.ingest import unpack_attributes

    store(archive, tmp_path, Spec("P", "A^B", 1, 1, 1))
    patient = unpack_attributes(table_rows(archive, schema.patient)[0].attrs)
    study = unpack_attributes(table_rows(archive, schema.study)[0].attrs)
    series = unpack_attributes(table_rows(archive, schema.series)[0].attrs)
    image = unpack_attributes(table_rows(archive, schema.instance)[0].attrs)
    assert patient["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}
    assert "00100020" in patient and "0020000D" not in patient
    assert study["00080050"] == {"vr": "SH", "Value": ["ACC0001"]}
    assert series["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert image["00200013"] == {"vr": "IS", "Value": [1]}
    assert image["00280010"] == {"vr": "US", "Value": [8]}
    assert "7FE00010" not in image  # pixel data is bulk data: never in the index


def test_same_patient_id_other_issuer_is_another_patient(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, Spec("123", "A^B", 1, 1, 1, issuer="SITE-A"))
    store(archive, tmp_path, Spec("123", "C^D", 2, 1, 1, issuer="SITE-B"))
    store(archive, tmp_path, Spec("123", "E^F", 3, 1, 1))
    ids = sorted(
        (p.patient_id, p.issuer_of_patient_id, p.num_studies)
        for p in table_rows(archive, schema.patient)
    )
    assert ids == [("123", "", 1), ("123", "SITE-A", 1), ("123", "SITE-B", 1)]


def test_differing_demographics_are_recorded_not_merged(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, Spec("P9", "Old^Name", 1, 1, 1, sex="F"))
    result = archive.store_file(write(Spec("P9", "New^Name", 2, 1, 1, sex="F"), tmp_path))
    assert result.conflicts == [("patient_name", "Old^Name", "New^Name")]
    (p,) = table_rows(archive, schema.patient)
    assert (p.patient_name, p.num_studies) == ("Old^Name", 2)
    (c,) = table_rows(archive, schema.demographics_conflict)
    assert (c.attribute, c.stored_value, c.received_value) == (
        "patient_name",
        "Old^Name",
        "New^Name",
    )


def test_duplicate_keeps_the_stored_copy(archive: Archive, tmp_path: Path) -> None:
    spec = Spec("P", "A^B", 1, 1, 1)
    assert store(archive, tmp_path, spec) is Outcome.STORED
    (before,) = table_rows(archive, schema.instance)
    assert store(archive, tmp_path, spec) is Outcome.DUPLICATE
    (after,) = table_rows(archive, schema.instance)
    assert after.blob_key == before.blob_key
    assert table_rows(archive, schema.series)[0].num_instances == 1
    assert [g for g in archive.store.scan() if g[1]] == [(before.blob_key[:3], [before.blob_key])]


def test_duplicate_replaces_when_configured(db_url: str, tmp_path: Path) -> None:
    configure_pydicom()
    arc = Archive.open(
        ArchiveOptions(
            db_url,
            str(tmp_path / "blobs"),
            overwrite_duplicates=True,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    try:
        store(arc, tmp_path, Spec("P", "A^B", 1, 1, 1))
        store(arc, tmp_path, Spec("P", "A^B", 1, 1, 2))
        (first, _) = table_rows(arc, schema.instance)
        assert store(arc, tmp_path, Spec("P", "A^B", 1, 1, 1)) is Outcome.REPLACED
        instances = table_rows(arc, schema.instance)
        assert len(instances) == 2
        assert first.blob_key not in {i.blob_key for i in instances}
        assert not arc.store.exists(first.blob_key)  # the replaced blob is gone
        (p,) = table_rows(arc, schema.patient)
        (s,) = table_rows(arc, schema.study)
        assert (p.num_studies, p.num_series, p.num_instances) == (1, 1, 2)
        assert (s.num_series, s.num_instances, s.modalities_in_study) == (1, 2, "CT")
    finally:
        arc.close()


def test_failed_index_write_revokes_the_blob(archive: Archive, tmp_path: Path) -> None:
    path = write(Spec("P", "A^B", 1, 1, 1), tmp_path)
    with archive.engine.begin() as conn:  # the duplicate check passes, the write cannot
        conn.execute(sa.text("ALTER TABLE series RENAME TO series_elsewhere"))
    with pytest.raises(OutOfResources, match="index write failed"):
        archive.store_file(path)
    assert [keys for _, keys in archive.store.scan() if keys] == []


def test_wildcard_characters_are_stored_literally(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, Spec("50%_off*?", "O'Brien^Ann", 1, 1, 1))
    (p,) = table_rows(archive, schema.patient)
    assert (p.patient_id, p.patient_name) == ("50%_off*?", "O'Brien^Ann")
