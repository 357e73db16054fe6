"""Identifier parsing and validation (PS3.4 C.4.1.1.3, C.2.2.2), without a network."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from pypacs.archive.ingest import configure_pydicom
from pypacs.model.levels import InformationModel, Level
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.types import Exact, InvalidQuery, Pattern, Query, QueryOptions, Range

STUDY_ROOT, PATIENT_ROOT, PSO = (
    InformationModel.STUDY_ROOT,
    InformationModel.PATIENT_ROOT,
    InformationModel.PATIENT_STUDY_ONLY,
)


@pytest.fixture(autouse=True)
def _lenient_pydicom() -> None:
    # Identifiers here carry invalid values on purpose; pydicom must not refuse to build them.
    configure_pydicom()


def identifier(level: str | None = "STUDY", **keys: object) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def parse(ds: Dataset, model: InformationModel = STUDY_ROOT, **options: bool) -> Query:
    return parse_identifier(ds, model, QueryOptions(**options))


def terms(ds: Dataset, keyword_tag: int, **options: bool) -> tuple[object, ...]:
    found = [m.terms for m in parse(ds, STUDY_ROOT, **options).matches if m.tag == keyword_tag]
    return found[0] if found else ()  # no match at all: universal


def test_level_and_return_keys() -> None:
    query = parse(identifier(PatientName="", StudyDate="", ModalitiesInStudy=""))
    assert query.level is Level.STUDY
    assert query.matches == ()  # every key universal
    tags = [t for t, _ in query.return_tags]
    assert tags[:3] == [0x00080020, 0x00080061, 0x00100010]  # the identifier's order (by tag)
    assert 0x0020000D in tags  # the level's unique key always comes back


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SMI*", (Pattern("SMI*"),)),
        ("Smith^John", (Exact("Smith^John"),)),
        ("*", ()),
        ("A\\B*", (Exact("A"), Pattern("B*"))),
    ],
)
def test_person_name_terms(value: str, expected: tuple[object, ...]) -> None:
    assert terms(identifier(PatientName=value), 0x00100010) == expected


def test_wildcards_are_literal_outside_their_vrs() -> None:
    # PS3.4 C.2.2.2.4: DA, UI and numbers take no wildcards.
    with pytest.raises(InvalidQuery) as info:
        parse(identifier(StudyInstanceUID="1.2.*"))
    assert info.value.tag == 0x0020000D
    with pytest.raises(InvalidQuery, match="not a date"):
        parse(identifier(StudyDate="2024*"))


def test_uid_list() -> None:
    assert terms(identifier(StudyInstanceUID="1.2.3\\1.2.4"), 0x0020000D) == (
        Exact("1.2.3"),
        Exact("1.2.4"),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240101-20240131", Range("20240101", "20240131")),
        ("-20240131", Range(None, "20240131")),
        ("20240201-", Range("20240201", None)),
    ],
)
def test_date_ranges(value: str, expected: Range) -> None:
    assert terms(identifier(StudyDate=value), 0x00080020) == (expected,)


def test_times_are_normalised_and_partial_bounds_cover_their_unit() -> None:
    assert terms(identifier(StudyTime="1000-1030"), 0x00080030) == (
        Range("100000.000000", "103059.999999"),
    )
    assert terms(identifier(StudyTime="10"), 0x00080030) == (
        Range("100000.000000", "105959.999999"),
    )
    assert terms(identifier(StudyTime="101500.25-"), 0x00080030) == (Range("101500.250000", None),)


@pytest.mark.parametrize("value", ["2024-13-45x", "20240", "-", "abc"])
def test_malformed_dates_name_the_element(value: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        parse(identifier(StudyDate=value))
    assert info.value.tag == 0x00080020


def test_missing_or_wrong_level() -> None:
    with pytest.raises(InvalidQuery, match="QueryRetrieveLevel") as info:
        parse(identifier(None, PatientID="1"))
    assert info.value.tag == 0x00080052
    with pytest.raises(InvalidQuery, match="not a level"):
        parse(identifier("STUDIES"))
    with pytest.raises(InvalidQuery, match="not part of the STUDY_ROOT model"):
        parse(identifier("PATIENT"))
    with pytest.raises(InvalidQuery, match="not part of the PATIENT_STUDY_ONLY model"):
        parse(identifier("SERIES", StudyInstanceUID="1.2"), PSO)


def test_hierarchical_needs_single_unique_keys_above() -> None:
    with pytest.raises(InvalidQuery, match="StudyInstanceUID must be a single value") as info:
        parse(identifier("SERIES", Modality="CT"))
    assert info.value.tag == 0x0020000D
    with pytest.raises(InvalidQuery, match="PatientID must be a single value"):
        parse(identifier("STUDY", PatientID="P*"), PATIENT_ROOT)
    with pytest.raises(InvalidQuery, match="StudyInstanceUID must be a single value"):
        parse(identifier("SERIES", StudyInstanceUID="1.2\\1.3"))
    ok = parse(identifier("SERIES", StudyInstanceUID="1.2", Modality="CT"))
    assert ok.level is Level.SERIES


def test_relational_needs_no_unique_keys_above() -> None:
    query = parse(identifier("IMAGE", Modality="CT"), relational=True)
    assert query.level is Level.IMAGE
    assert [m.tag for m in query.matches] == [0x00080060]


def test_keys_below_the_level_are_returned_but_not_matched() -> None:
    query = parse(identifier("STUDY", Modality="CT", SOPInstanceUID="1.2.3"))
    assert query.matches == ()
    assert {t for t, _ in query.return_tags} >= {0x00080060, 0x00080018}


def test_combined_date_time_only_when_negotiated() -> None:
    ds = identifier(StudyDate="20240101-20240102", StudyTime="2200-0600")
    assert parse(ds).combined is None
    combined = parse(ds, combined_datetime=True).combined
    assert combined is not None
    assert (combined.low, combined.high) == ("20240101220000.000000", "20240102060059.999999")


def test_sequence_keys() -> None:
    item = Dataset()
    item.CodeValue = "XR*"
    ds = identifier(ProcedureCodeSequence=[item])
    (match,) = parse(ds).matches
    assert match.vr == "SQ"
    assert [(m.tag, m.terms) for m in match.items] == [(0x00080100, (Pattern("XR*"),))]
    two = identifier(ProcedureCodeSequence=[Dataset(), Dataset()])
    with pytest.raises(InvalidQuery, match="at most one item"):
        parse(two)


def test_pn_case_option_reaches_the_match() -> None:
    ds = identifier(PatientName="smith")
    assert parse(ds).matches[0].case_insensitive
    assert not parse(ds, pn_case_insensitive=False).matches[0].case_insensitive
