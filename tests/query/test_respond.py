"""query/respond: a matched row (columns and stored attribute sets) and the request's return
keys → the response identifier (PS3.4 C.4.1.1.3.2) and the DICOM JSON object (PS3.18 F.2)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydicom.dataset import Dataset

from pypacs.model.levels import InformationModel, Level
from pypacs.query.respond import ResponseContext, Row, build_identifier, build_json
from pypacs.query.to_sql import compile_query, label
from pypacs.query.types import Exact, Match, Query

PATIENT_NAME, PATIENT_ID, STUDY_UID, STUDY_DATE = 0x00100010, 0x00100020, 0x0020000D, 0x00080020
DESCRIPTION, MODALITIES, SERIES_COUNT = 0x00081030, 0x00080061, 0x00201206
AGE, ADMITTING, CODES, CODE_VALUE, SCHEME = (
    0x00101010,
    0x00081080,
    0x00081032,
    0x00080100,
    0x00080102,
)
RETRIEVE_AE, AVAILABILITY, QR_LEVEL, SERIES_UID = 0x00080054, 0x00080056, 0x00080052, 0x0020000E

CONTEXT = ResponseContext(ae_title="ARCHIVE1")


def packed(attrs: dict[str, Any]) -> bytes:
    """An attribute set as the index keeps it: DICOM JSON, zlib-compressed."""
    return zlib.compress(json.dumps(attrs).encode())


def code(value: str, scheme: str) -> dict[str, Any]:
    return {
        f"{CODE_VALUE:08X}": {"vr": "SH", "Value": [value]},
        f"{SCHEME:08X}": {"vr": "SH", "Value": [scheme]},
        "00080104": {"vr": "LO", "Value": [f"code {value}"]},
    }


STUDY_ATTRS = {
    f"{AGE:08X}": {"vr": "AS", "Value": ["063Y"]},
    f"{DESCRIPTION:08X}": {"vr": "LO", "Value": ["Chest CT"]},
    f"{CODES:08X}": {"vr": "SQ", "Value": [code("CHEST01", "99TEST"), code("HEAD01", "99TEST")]},
}


def study_query(
    *tags: tuple[int, Level],
    charset: tuple[str, ...] = (),
    matches: tuple[Match, ...] = (),
    sequences: tuple[Match, ...] = (),
    include_all: bool = False,
) -> Query:
    return Query(
        Level.STUDY,
        InformationModel.STUDY_ROOT,
        matches,
        return_tags=tags,
        charset=charset,
        sequences=sequences,
        include_all=include_all,
    )


def row_of(query: Query, name: str = "Smith^John", description: str = "Chest CT") -> Row:
    """The row the compiled statement of ``query`` would bring for one stored study."""
    compiled = compile_query(query)
    values: dict[str, Any] = {
        label(Level.PATIENT, "pk"): 1,
        label(Level.PATIENT, "patient_id"): "PAT-1",
        label(Level.PATIENT, "patient_name"): name,
        label(Level.PATIENT, "patient_birth_date"): None,
        label(Level.PATIENT, "attrs"): packed({}),
        label(Level.STUDY, "pk"): 7,
        label(Level.STUDY, "study_instance_uid"): "1.2.3",
        label(Level.STUDY, "study_date"): "20240101",
        label(Level.STUDY, "study_description"): description,
        label(Level.STUDY, "modalities_in_study"): "CT\\MR",
        label(Level.STUDY, "num_series"): 3,
        label(Level.STUDY, "attrs"): packed(
            {**STUDY_ATTRS, f"{DESCRIPTION:08X}": {"vr": "LO", "Value": [description]}}
        ),
    }
    return Row(compiled, values)


def identifier(query: Query, **row: str) -> Dataset:
    return build_identifier(query, compile_query(query), row_of(query, **row), CONTEXT)


def test_identifier_holds_exactly_the_requested_keys_and_the_level() -> None:
    query = study_query(
        (STUDY_UID, Level.STUDY),
        (PATIENT_ID, Level.PATIENT),
        (STUDY_DATE, Level.STUDY),
        (MODALITIES, Level.STUDY),
        (SERIES_COUNT, Level.STUDY),
    )
    ds = identifier(query)
    assert sorted(e.keyword for e in ds) == sorted(
        [
            "QueryRetrieveLevel",
            "StudyInstanceUID",
            "PatientID",
            "StudyDate",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
        ]
    )
    assert ds.QueryRetrieveLevel == "STUDY"
    assert (ds.StudyInstanceUID, ds.PatientID, ds.StudyDate) == ("1.2.3", "PAT-1", "20240101")
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedSeries == 3
    assert "SpecificCharacterSet" not in ds  # every value is ASCII


def test_requested_keys_without_a_value_come_back_zero_length() -> None:
    query = study_query(
        (STUDY_UID, Level.STUDY),
        (0x00100030, Level.PATIENT),  # PatientBirthDate: a column, NULL here
        (ADMITTING, Level.STUDY),  # no column, not in the attribute set
        (SERIES_UID, Level.SERIES),  # below the query level
        (0x00081040, Level.STUDY),  # InstitutionalDepartmentName: not stored either
    )
    ds = identifier(query)
    for keyword in (
        "PatientBirthDate",
        "AdmittingDiagnosesDescription",
        "SeriesInstanceUID",
        "InstitutionalDepartmentName",
    ):
        assert keyword in ds, keyword
        assert ds[keyword].is_empty, keyword


def test_keys_without_a_column_come_from_the_attribute_set() -> None:
    ds = identifier(study_query((STUDY_UID, Level.STUDY), (AGE, Level.STUDY)))
    assert ds.PatientAge == "063Y"


def test_retrieve_ae_title_and_availability_are_answered() -> None:
    query = study_query(
        (STUDY_UID, Level.STUDY), (RETRIEVE_AE, Level.STUDY), (AVAILABILITY, Level.STUDY)
    )
    ds = identifier(query)
    assert ds.RetrieveAETitle == "ARCHIVE1"
    assert ds.InstanceAvailability == "ONLINE"


def test_a_sequence_key_with_an_item_returns_matching_items_with_its_keys() -> None:
    # PS3.4 C.2.2.2.6: only matching items, each with only the keys the request's item names.
    value_is = Match(CODE_VALUE, "SH", Level.STUDY, (Exact("HEAD01"),))
    sequence = Match(
        CODES, "SQ", Level.STUDY, items=(value_is,), item_tags=(CODE_VALUE, 0x00080104, 0x00080105)
    )
    query = study_query(
        (STUDY_UID, Level.STUDY), (CODES, Level.STUDY), matches=(sequence,), sequences=(sequence,)
    )
    ds = identifier(query)
    (item,) = ds.ProcedureCodeSequence
    assert sorted(e.keyword for e in item) == ["CodeMeaning", "CodeValue", "MappingResource"]
    assert (item.CodeValue, item.CodeMeaning) == ("HEAD01", "code HEAD01")
    assert item["MappingResource"].is_empty


def test_an_absent_sequence_comes_back_empty() -> None:
    ds = identifier(study_query((STUDY_UID, Level.STUDY), (0x00081110, Level.STUDY)))
    assert ds.ReferencedStudySequence == []


def test_a_non_ascii_value_declares_utf8_without_a_request_charset() -> None:
    ds = identifier(study_query((PATIENT_NAME, Level.PATIENT)), name="Müller^Jürgen")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen"


def test_the_request_charset_is_kept_when_it_holds_every_value() -> None:
    # PS3.5 6.1.2.3.
    latin1 = identifier(
        study_query((PATIENT_NAME, Level.PATIENT), charset=("ISO_IR 100",)), name="Müller^Jürgen"
    )
    assert latin1.SpecificCharacterSet == "ISO_IR 100"
    japanese = identifier(
        study_query((PATIENT_NAME, Level.PATIENT), charset=("ISO_IR 100",)),
        name="Yamada^Tarou=山田^太郎",
    )
    assert japanese.SpecificCharacterSet == "ISO_IR 192"
    ascii_only = identifier(study_query((PATIENT_NAME, Level.PATIENT), charset=("ISO_IR 100",)))
    assert "SpecificCharacterSet" not in ascii_only


def test_json_holds_the_requested_keys_sorted_without_the_level() -> None:
    query = study_query(
        (STUDY_UID, Level.STUDY),
        (QR_LEVEL, Level.STUDY),
        (PATIENT_NAME, Level.PATIENT),
        (SERIES_COUNT, Level.STUDY),
        (ADMITTING, Level.STUDY),
        (RETRIEVE_AE, Level.STUDY),
    )
    found = build_json(query, compile_query(query), row_of(query), CONTEXT)
    assert found == {
        "00080054": {"vr": "AE", "Value": ["ARCHIVE1"]},
        "00081080": {"vr": "LO"},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00201206": {"vr": "IS", "Value": [3]},
    }


def test_json_include_all_adds_every_stored_attribute() -> None:
    query = study_query((STUDY_UID, Level.STUDY), include_all=True)
    found = build_json(query, compile_query(query), row_of(query), CONTEXT)
    assert found["00101010"] == {"vr": "AS", "Value": ["063Y"]}
    assert [i["00080100"]["Value"] for i in found["00081032"]["Value"]] == [
        ["CHEST01"],
        ["HEAD01"],
    ]
    assert list(found) == sorted(found)
