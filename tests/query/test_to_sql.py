"""query/to_sql: each Match kind compiled to SQL, executed on SQLite in memory over the real
index schema (index/schema.py) with the engine's own pragmas, checked by the rows it returns."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.datadict import tag_for_keyword
from sqlalchemy import Engine

from pypacs.index.engine import make_engine
from pypacs.index.schema import metadata, patient, study
from pypacs.model.keys import key_for_tag
from pypacs.model.levels import InformationModel, Level
from pypacs.model.vr import normalise_time, pn_match_form
from pypacs.query.to_sql import compile_query, label
from pypacs.query.types import CombinedDateTime, Exact, Match, Pattern, Query, Range, Term

EMPTY_ATTRS = zlib.compress(json.dumps({}).encode())


@dataclass(frozen=True)
class Row:
    """One patient with one study: the columns the cases below search."""

    study_uid: str
    patient_id: str
    name: str
    date: str | None
    time: str | None
    accession: str
    description: str | None
    modalities: str
    num_series: int = 1


ROWS = (
    Row("1.1", "50%_OFF", "Smith^John", "20240101", "000000", "A_1%", "Chest CT", "CT\\MR", 2),
    Row("1.2", "50X_OFF", "SMITH^JANE", "20240131", "235959.999999", "AX1%", "chest ct", "CT"),
    Row("1.3", "50%XOFF", "smithers^bob", "20240201", "101500.25", "ACC-3", None, "MR\\SR\\CT"),
    Row("1.4", "PAT-4", "Yamada^Tarou=山田^太郎", None, None, "ACC_4", "Head", "MRI", 3),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """An in-memory index (the process's engine settings: case-sensitive LIKE) holding ROWS."""
    eng = make_engine("sqlite:///:memory:")
    metadata.create_all(eng)
    with eng.begin() as conn:
        for row in ROWS:
            inserted = conn.execute(
                patient.insert().values(
                    patient_id=row.patient_id,
                    patient_name=row.name,
                    patient_name_ci=pn_match_form(row.name),
                    attrs=EMPTY_ATTRS,
                )
            ).inserted_primary_key
            assert inserted is not None
            pk = inserted[0]
            conn.execute(
                study.insert().values(
                    patient_pk=pk,
                    study_instance_uid=row.study_uid,
                    study_date=row.date,
                    study_time=row.time,
                    study_time_norm=None if row.time is None else normalise_time(row.time),
                    accession_number=row.accession,
                    study_description=row.description,
                    modalities_in_study=row.modalities,
                    num_series=row.num_series,
                    attrs=EMPTY_ATTRS,
                )
            )
    yield eng
    eng.dispose()


def key(keyword: str, *terms: Term, case_insensitive: bool = False) -> Match:
    """A key of the index's key table with its terms (none: universal)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    found = key_for_tag(tag)
    assert found is not None, keyword
    return Match(tag, found.vr, found.level, terms, case_insensitive=case_insensitive)


def studies(engine: Engine, *matches: Match, combined: CombinedDateTime | None = None) -> list[str]:
    """Study Instance UIDs the compiled statement returns; every key decided in SQL."""
    query = Query(Level.STUDY, InformationModel.STUDY_ROOT, matches, combined=combined)
    compiled = compile_query(query)
    assert compiled.residual == ()
    assert compiled.combined_residual is None
    with engine.connect() as conn:
        rows = conn.execute(compiled.statement).mappings()
        return [row[label(Level.STUDY, "study_instance_uid")] for row in rows]


ALL = [r.study_uid for r in ROWS]


def test_universal_matching_returns_every_row(engine: Engine) -> None:
    assert studies(engine, key("AccessionNumber")) == ALL
    assert studies(engine, key("PatientName"), key("StudyDate")) == ALL


def test_single_value_is_exact_and_case_sensitive(engine: Engine) -> None:
    assert studies(engine, key("StudyDescription", Exact("Chest CT"))) == ["1.1"]
    assert studies(engine, key("StudyDescription", Exact("CHEST CT"))) == []
    assert studies(engine, key("PatientID", Exact("50%_OFF"))) == ["1.1"]


def test_wildcards_keep_percent_and_underscore_literal(engine: Engine) -> None:
    # PS3.4 C.2.2.2.4: only "*" and "?" are wildcards; "%" and "_" are characters.
    assert studies(engine, key("PatientID", Pattern("50%*"))) == ["1.1", "1.3"]
    assert studies(engine, key("PatientID", Pattern("*_OFF"))) == ["1.1", "1.2"]
    assert studies(engine, key("AccessionNumber", Pattern("A?1%"))) == ["1.1", "1.2"]
    assert studies(engine, key("AccessionNumber", Pattern("ACC_*"))) == ["1.4"]
    assert studies(engine, key("StudyDescription", Pattern("chest*"))) == ["1.2"]


def test_wildcard_on_sql_text_is_case_sensitive(engine: Engine) -> None:
    # SQLite's LIKE ignores ASCII case unless told; DICOM matching does not.
    assert studies(engine, key("StudyDescription", Pattern("CHEST*"))) == []


def test_closed_range_includes_both_bounds(engine: Engine) -> None:
    assert studies(engine, key("StudyDate", Range("20240101", "20240131"))) == ["1.1", "1.2"]


def test_open_ranges_and_null_values(engine: Engine) -> None:
    # A row without a value matches no range (PS3.4 C.2.2.2.5).
    assert studies(engine, key("StudyDate", Range("20240131", None))) == ["1.2", "1.3"]
    assert studies(engine, key("StudyDate", Range(None, "20240101"))) == ["1.1"]


def test_time_range_reads_the_normalised_column(engine: Engine) -> None:
    low, high = "101500.250000", "235959.999999"
    assert studies(engine, key("StudyTime", Range(low, high))) == ["1.2", "1.3"]
    assert studies(engine, key("StudyTime", Range(None, "000000.000000"))) == ["1.1"]


def test_uid_list_matches_any_listed_uid(engine: Engine) -> None:
    # PS3.4 C.2.2.2.2: one bound list, any length.
    uids = key("StudyInstanceUID", Exact("1.3"), Exact("1.1"), Exact("9.9"))
    assert studies(engine, uids) == ["1.1", "1.3"]
    many = key("StudyInstanceUID", *(Exact(f"2.{n}") for n in range(500)), Exact("1.4"))
    assert studies(engine, many) == ["1.4"]


def test_several_values_and_kinds_of_one_key_are_alternatives(engine: Engine) -> None:
    # PS3.4 C.2.2.2.8: any value matches.
    either = key("AccessionNumber", Exact("ACC-3"), Pattern("AX*"))
    assert studies(engine, either) == ["1.2", "1.3"]


def test_keys_are_conjunctive(engine: Engine) -> None:
    found = studies(
        engine, key("StudyDate", Range("20240101", None)), key("PatientID", Pattern("50%*"))
    )
    assert found == ["1.1", "1.3"]


def test_a_value_among_several_stored_values(engine: Engine) -> None:
    # ModalitiesInStudy "CT\MR": CT and MR each match it, "MRI" is not "MR".
    assert studies(engine, key("ModalitiesInStudy", Exact("MR"))) == ["1.1", "1.3"]
    assert studies(engine, key("ModalitiesInStudy", Exact("SR"))) == ["1.3"]
    assert studies(engine, key("ModalitiesInStudy", Exact("MRI"))) == ["1.4"]


def test_counts_match_as_integers(engine: Engine) -> None:
    assert studies(engine, key("NumberOfStudyRelatedSeries", Exact("2"))) == ["1.1"]
    assert studies(engine, key("NumberOfStudyRelatedSeries", Exact("3"), Exact("1"))) == [
        "1.2",
        "1.3",
        "1.4",
    ]
    assert studies(engine, key("NumberOfStudyRelatedSeries", Exact("two"))) == []


def test_person_name_case_insensitive_option(engine: Engine) -> None:
    ci = key("PatientName", Exact("smith^john"), case_insensitive=True)
    assert studies(engine, ci) == ["1.1"]
    assert studies(engine, key("PatientName", Pattern("SMITH*"), case_insensitive=True)) == [
        "1.1",
        "1.2",
        "1.3",
    ]


def test_person_name_case_sensitive_leaves_a_superset_to_the_residual(engine: Engine) -> None:
    # The match column is upper-cased: case-sensitive PN is narrowed by SQL, then decided
    # over the stored name in Python.
    query = Query(
        Level.STUDY,
        InformationModel.STUDY_ROOT,
        (key("PatientName", Pattern("smith*")),),
    )
    compiled = compile_query(query)
    assert [m.tag for m in compiled.residual] == [0x00100010]
    with engine.connect() as conn:
        rows = list(conn.execute(compiled.statement).mappings())
    assert [r[label(Level.STUDY, "study_instance_uid")] for r in rows] == ["1.1", "1.2", "1.3"]
    assert Level.PATIENT in compiled.attrs


def test_person_name_with_groups_is_left_to_the_residual() -> None:
    compiled = compile_query(
        Query(
            Level.STUDY,
            InformationModel.STUDY_ROOT,
            (key("PatientName", Exact("Yamada^Tarou=山田^太郎"), case_insensitive=True),),
        )
    )
    assert [m.tag for m in compiled.residual] == [0x00100010]


def test_a_key_without_a_column_is_residual() -> None:
    age = Match(0x00101010, "AS", Level.STUDY, (Exact("030Y"),))
    compiled = compile_query(Query(Level.STUDY, InformationModel.STUDY_ROOT, (age,)))
    assert compiled.residual == (age,)
    assert compiled.attrs == frozenset({Level.STUDY})


def test_a_sequence_key_is_residual() -> None:
    item = Match(0x00080100, "SH", Level.STUDY, (Exact("HEAD01"),))
    procedures = Match(0x00081032, "SQ", Level.STUDY, items=(item,))
    compiled = compile_query(Query(Level.STUDY, InformationModel.STUDY_ROOT, (procedures,)))
    assert compiled.residual == (procedures,)


def test_nothing_matches_no_row(engine: Engine) -> None:
    nothing = Match(0x00080050, "SH", Level.STUDY, nothing=True)
    assert studies(engine, nothing) == []


def test_combined_date_time_range(engine: Engine) -> None:
    # PS3.4 C.2.2.2.5.1: [2024-01-31 12:00, 2024-02-01 10:15:00.25] as one range.
    combined = CombinedDateTime(0x00080020, 0x00080030, "20240131120000.000000", None)
    assert studies(engine, combined=combined) == ["1.2", "1.3"]
    upto = CombinedDateTime(0x00080020, 0x00080030, None, "20240201101500.250000")
    assert studies(engine, combined=upto) == ["1.1", "1.2", "1.3"]


def test_limit_offset_and_the_row_past_the_maximum(engine: Engine) -> None:
    paged = compile_query(
        Query(Level.STUDY, InformationModel.STUDY_ROOT, (), limit=2, offset=1)
    ).statement
    capped = compile_query(
        Query(Level.STUDY, InformationModel.STUDY_ROOT, (), max_results=2)
    ).statement
    uid = label(Level.STUDY, "study_instance_uid")
    with engine.connect() as conn:
        assert [r[uid] for r in conn.execute(paged).mappings()] == ["1.2", "1.3"]
        assert [r[uid] for r in conn.execute(capped).mappings()] == ["1.1", "1.2", "1.3"]


def test_the_parent_level_is_joined(engine: Engine) -> None:
    compiled = compile_query(Query(Level.STUDY, InformationModel.STUDY_ROOT, ()))
    assert compiled.levels == (Level.PATIENT, Level.STUDY)
    with engine.connect() as conn:
        rows = list(conn.execute(compiled.statement).mappings())
    assert [r[label(Level.PATIENT, "patient_id")] for r in rows] == [r.patient_id for r in ROWS]
