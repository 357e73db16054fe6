"""Deleting studies, series and instances: the same behaviour on SQLite and PostgreSQL.

Derived values stay what the rows say, parents left empty go, blobs go after their rows,
and a delete cut short between its index commit and its blob removals never brings an
instance back (index/deletes.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from pypacs.archive import Archive
from pypacs.archive.check import check
from pypacs.errors import NotFound
from pypacs.index import deletes, schema, tx
from pypacs.index.migrations import LATEST, migrate
from pypacs.query.entity import EntityRef
from pypacs.store.base import BlobKey

from dicomgen import Spec, make_dataset, series_uid, sop_uid, study_uid, write
from helpers import table_rows

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def blobs(archive: Archive) -> set[str]:
    return {key for _, keys in archive.store.scan() for key in keys}


@pytest.fixture
def filled(archive: Archive, tmp_path: Path) -> Archive:
    """PAT1: two studies of a CT and an MR series, three instances each; PAT2: one MR."""
    for study in (1, 2):
        for series, modality in ((1, "CT"), (2, "MR")):
            for inst in (1, 2, 3):
                spec = Spec("PAT1", "Smith^Ann", study, series, inst, modality=modality)
                archive.store_file(write(spec, tmp_path))
    archive.store_file(write(Spec("PAT2", "Jones^Bob", 1, 1, 1, modality="MR"), tmp_path))
    return archive


def assert_derived_values_right(archive: Archive) -> None:
    """Every count and multi-valued study attribute equals what the rows below say; no
    parent is left without children; every row's blob is in the store and no other."""
    patients = table_rows(archive, schema.patient)
    studies = table_rows(archive, schema.study)
    series = table_rows(archive, schema.series)
    instances = table_rows(archive, schema.instance)
    of_series: dict[int, list[sa.Row[tuple[object, ...]]]] = defaultdict(list)
    for i in instances:
        of_series[i.series_pk].append(i)
    for s in series:
        assert s.num_instances == len(of_series[s.pk]) > 0
    for st in studies:
        own = [s for s in series if s.study_pk == st.pk]
        own_instances = [i for s in own for i in of_series[s.pk]]
        assert st.num_series == len(own) > 0
        assert st.num_instances == len(own_instances)
        assert st.modalities_in_study == "\\".join(sorted({str(s.modality) for s in own}))
        assert st.sop_classes_in_study == "\\".join(
            sorted({str(i.sop_class_uid) for i in own_instances})
        )
    for p in patients:
        own_studies = [st for st in studies if st.patient_pk == p.pk]
        assert p.num_studies == len(own_studies) > 0
        assert p.num_series == sum(st.num_series for st in own_studies)
        assert p.num_instances == sum(st.num_instances for st in own_studies)
    assert blobs(archive) == {str(i.blob_key) for i in instances}
    assert table_rows(archive, schema.blob_deletion) == []


def test_delete_one_instance(filled: Archive) -> None:
    removed = filled.delete(
        EntityRef(study_uid("PAT1", 1), series_uid("PAT1", 1, 1), sop_uid("PAT1", 1, 1, 2))
    )
    assert (removed.patients, removed.studies, removed.series, removed.instances) == (0, 0, 0, 1)
    assert len(table_rows(filled, schema.instance)) == 12
    (series,) = [s for s in table_rows(filled, schema.series) if s.series_number == "1"][:1]
    assert series.num_instances == 2
    assert_derived_values_right(filled)


def test_delete_the_last_instance_of_a_series_prunes_it_and_its_modality(
    filled: Archive,
) -> None:
    for inst in (1, 2, 3):
        removed = filled.delete(
            EntityRef(study_uid("PAT1", 2), series_uid("PAT1", 2, 2), sop_uid("PAT1", 2, 2, inst))
        )
    assert (removed.series, removed.instances) == (1, 1)
    study = next(s for s in table_rows(filled, schema.study) if s.study_instance_uid.endswith(".2"))
    assert (study.num_series, study.num_instances, study.modalities_in_study) == (1, 3, "CT")
    assert study.sop_classes_in_study == CT
    assert_derived_values_right(filled)


def test_delete_a_series(filled: Archive) -> None:
    removed = filled.delete(EntityRef(study_uid("PAT1", 1), series_uid("PAT1", 1, 1)))
    assert (removed.patients, removed.studies, removed.series, removed.instances) == (0, 0, 1, 3)
    study = next(s for s in table_rows(filled, schema.study) if s.study_instance_uid.endswith(".1"))
    assert (study.modalities_in_study, study.sop_classes_in_study) == ("MR", MR)
    (pat1, _) = table_rows(filled, schema.patient)
    assert (pat1.num_studies, pat1.num_series, pat1.num_instances) == (2, 3, 9)
    assert_derived_values_right(filled)


def test_delete_a_study_then_the_patient_goes_with_its_last(filled: Archive) -> None:
    removed = filled.delete(EntityRef(study_uid("PAT1", 1)))
    assert (removed.patients, removed.studies, removed.series, removed.instances) == (0, 1, 2, 6)
    assert_derived_values_right(filled)
    removed = filled.delete(EntityRef(study_uid("PAT1", 2)))
    assert (removed.patients, removed.studies, removed.series, removed.instances) == (1, 1, 2, 6)
    assert [p.patient_id for p in table_rows(filled, schema.patient)] == ["PAT2"]
    assert_derived_values_right(filled)
    filled.delete(EntityRef(study_uid("PAT2", 1), series_uid("PAT2", 1, 1)))
    for table in (schema.patient, schema.study, schema.series, schema.instance):
        assert table_rows(filled, table) == []
    assert blobs(filled) == set()


def test_demographics_conflicts_go_with_their_instances(archive: Archive, tmp_path: Path) -> None:
    archive.store_file(write(Spec("P9", "Old^Name", 1, 1, 1), tmp_path))
    archive.store_file(write(Spec("P9", "New^Name", 2, 1, 1), tmp_path))
    assert len(table_rows(archive, schema.demographics_conflict)) == 1
    archive.delete(EntityRef(study_uid("P9", 2)))
    assert table_rows(archive, schema.demographics_conflict) == []
    archive.store_file(write(Spec("P9", "New^Name", 2, 1, 1), tmp_path))
    assert len(table_rows(archive, schema.demographics_conflict)) == 1
    archive.delete(EntityRef(study_uid("P9", 1)))
    archive.delete(EntityRef(study_uid("P9", 2)))
    assert (
        table_rows(archive, schema.demographics_conflict)
        == table_rows(archive, schema.patient)
        == []
    )


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (("9.9",), "study 9.9 is not in the archive"),
        (("S1", "9.9"), "series 9.9 of study"),
        (("S1", "SE1", "9.9"), "instance 9.9 of series"),
        # A series or an instance under another study or series is not found there.
        (("S2", "SE1"), "series .* of study"),
        (("S1", "SE2", "I1"), "instance .* of series"),
    ],
)
def test_unknown_entities_are_not_found(
    filled: Archive, levels: tuple[str, ...], message: str
) -> None:
    names = {
        "S1": study_uid("PAT1", 1),
        "S2": study_uid("PAT1", 2),
        "SE1": series_uid("PAT1", 1, 1),
        "SE2": series_uid("PAT1", 1, 2),
        "I1": sop_uid("PAT1", 1, 1, 1),
    }
    before = {t.name: table_rows(filled, t) for t in (schema.instance, schema.series, schema.study)}
    with pytest.raises(NotFound, match=message):
        filled.delete(EntityRef(*(names.get(level, level) for level in levels)))
    assert before == {
        t.name: table_rows(filled, t) for t in (schema.instance, schema.series, schema.study)
    }


def test_a_delete_cut_short_after_its_commit_never_brings_instances_back(filled: Archive) -> None:
    # Step 1 alone, as if the process died before removing a single blob.
    removed = tx.write(
        filled.engine, lambda conn: deletes.delete_entity(conn, study_uid("PAT1", 1))
    )
    assert removed is not None and len(removed.blob_keys) == 6
    left_behind = set(removed.blob_keys)
    assert left_behind <= blobs(filled)
    assert {r.blob_key for r in table_rows(filled, schema.blob_deletion)} == left_behind

    # A check that only reports must not call them unindexed blobs, nor touch them.
    report = check(filled, repair=False)
    assert report.clean, report
    assert left_behind <= blobs(filled)

    report = check(filled)
    assert report.clean, report
    assert blobs(filled).isdisjoint(left_behind)
    assert len(table_rows(filled, schema.instance)) == 7
    assert_derived_values_right(filled)


def test_a_delete_cut_short_after_some_blobs_is_finished(filled: Archive) -> None:
    removed = tx.write(
        filled.engine,
        lambda conn: deletes.delete_entity(conn, study_uid("PAT1", 2), series_uid("PAT1", 2, 1)),
    )
    assert removed is not None
    filled.store.delete(BlobKey(removed.blob_keys[0]))  # step 2 got this far
    assert filled.finish_deletions() == 3  # the one already gone is settled too
    assert_derived_values_right(filled)
    assert filled.finish_deletions() == 0


def test_blobs_that_cannot_be_removed_stay_recorded(
    filled: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pypacs.errors import StoreError

    def refuse(key: str) -> None:
        raise StoreError(f"cannot delete blob {key}: read-only")

    monkeypatch.setattr(filled.store, "delete", refuse)
    removed = filled.delete(EntityRef(study_uid("PAT2", 1)))
    assert removed.instances == 1
    assert {r.blob_key for r in table_rows(filled, schema.blob_deletion)} == set(removed.blob_keys)
    assert check(filled).clean  # not re-indexed, though still on disk
    assert set(removed.blob_keys) <= blobs(filled)
    monkeypatch.undo()
    assert filled.finish_deletions() == 1
    assert_derived_values_right(filled)


def test_a_store_after_a_delete_indexes_the_instance_again(filled: Archive, tmp_path: Path) -> None:
    filled.delete(EntityRef(study_uid("PAT2", 1)))
    ds = make_dataset(Spec("PAT2", "Jones^Bob", 1, 1, 1, modality="MR"))
    path = tmp_path / "again.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert filled.store_file(path).outcome.value == "stored"
    assert_derived_values_right(filled)


def test_migration_3_adds_the_table_to_an_older_index(archive: Archive) -> None:
    with archive.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE blob_deletion"))
        conn.execute(schema.schema_version.update().values(version=2))
    assert migrate(archive.engine) == LATEST
    assert table_rows(archive, schema.blob_deletion) == []
    assert migrate(archive.engine) == LATEST
