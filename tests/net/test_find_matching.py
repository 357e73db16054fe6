"""C-FIND matching over real sockets: every matching type of PS3.4 C.2.2.2 at each level of
each information model, with exact expected entity sets written from the fixture set."""

from __future__ import annotations

import pytest

from findcases import (
    DATE_TIME_CASES,
    IMAGE_CASES,
    PATIENT_CASES,
    PATIENT_STUDY_CASES,
    SERIES_CASES,
    STUDY_CASES,
)
from findfixtures import (
    PATIENT_ROOT,
    PATIENT_STUDY_ONLY,
    RELATIONAL,
    RELATIONAL_COMBINED,
    SERIES_UID,
    STUDY_ROOT,
    STUDY_UID,
    SUCCESS,
    find,
    instances,
    patients,
    series,
    studies,
)
from serving import RunningServer

# -- STUDY level, Study Root (patient keys are study keys here, PS3.4 C.6.2.1) ---------------


@pytest.mark.parametrize(("keys", "expected"), STUDY_CASES)
def test_study_level_study_root(
    find_pacs: RunningServer, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    answer = find(
        find_pacs.dicom_port, {**keys, "StudyInstanceUID": keys.get("StudyInstanceUID", "")}
    )
    assert answer.status == SUCCESS
    assert studies(answer.responses) == sorted(expected)


# -- PATIENT level: Patient Root and Patient/Study Only --------------------------------------


@pytest.mark.parametrize("model", [PATIENT_ROOT, PATIENT_STUDY_ONLY], ids=["PR", "PSO"])
@pytest.mark.parametrize(("keys", "expected"), PATIENT_CASES)
def test_patient_level(
    find_pacs: RunningServer, model: str, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    answer = find(find_pacs.dicom_port, {"PatientID": "", **keys}, level="PATIENT", model=model)
    assert answer.status == SUCCESS
    assert patients(answer.responses) == sorted(expected)


# -- STUDY level under a patient: Patient Root and Patient/Study Only ------------------------


@pytest.mark.parametrize("model", [PATIENT_ROOT, PATIENT_STUDY_ONLY], ids=["PR", "PSO"])
@pytest.mark.parametrize(("keys", "expected"), PATIENT_STUDY_CASES)
def test_study_level_under_patient(
    find_pacs: RunningServer, model: str, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    keys = {"PatientID": "PAT-JOHN", "StudyInstanceUID": "", **keys}
    answer = find(find_pacs.dicom_port, keys, level="STUDY", model=model)
    assert answer.status == SUCCESS
    assert studies(answer.responses) == sorted(expected)


# -- SERIES and IMAGE levels: Study Root and Patient Root (hierarchical) ---------------------


@pytest.mark.parametrize("model", [STUDY_ROOT, PATIENT_ROOT], ids=["SR", "PR"])
@pytest.mark.parametrize(("keys", "expected"), SERIES_CASES)
def test_series_level(
    find_pacs: RunningServer, model: str, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    above: dict[str, object] = {"StudyInstanceUID": STUDY_UID["john1"]}
    if model == PATIENT_ROOT:
        above["PatientID"] = "PAT-JOHN"
    answer = find(
        find_pacs.dicom_port,
        {**above, "SeriesInstanceUID": "", **keys},
        level="SERIES",
        model=model,
    )
    assert answer.status == SUCCESS
    assert series(answer.responses) == sorted(expected)


@pytest.mark.parametrize("model", [STUDY_ROOT, PATIENT_ROOT], ids=["SR", "PR"])
@pytest.mark.parametrize(("keys", "expected"), IMAGE_CASES)
def test_image_level(
    find_pacs: RunningServer, model: str, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    above: dict[str, object] = {
        "StudyInstanceUID": STUDY_UID["john1"],
        "SeriesInstanceUID": SERIES_UID["john1/1"],
    }
    if model == PATIENT_ROOT:
        above["PatientID"] = "PAT-JOHN"
    answer = find(
        find_pacs.dicom_port, {**above, "SOPInstanceUID": "", **keys}, level="IMAGE", model=model
    )
    assert answer.status == SUCCESS
    assert instances(answer.responses) == sorted(expected)


# -- combined date-time matching (PS3.4 C.2.2.2.5.1), negotiated per association -------------


@pytest.mark.parametrize(("keys", "combined", "independent"), DATE_TIME_CASES)
def test_combined_date_time_only_when_negotiated(
    find_pacs: RunningServer,
    keys: dict[str, object],
    combined: tuple[str, ...],
    independent: tuple[str, ...],
) -> None:
    keys = {**keys, "StudyInstanceUID": ""}
    negotiated = find(find_pacs.dicom_port, keys, ext=RELATIONAL_COMBINED)
    relational_only = find(find_pacs.dicom_port, keys, ext=RELATIONAL)
    plain = find(find_pacs.dicom_port, keys)
    assert [a.status for a in (negotiated, relational_only, plain)] == [SUCCESS] * 3
    assert studies(negotiated.responses) == sorted(combined)
    assert studies(relational_only.responses) == sorted(independent)
    assert studies(plain.responses) == sorted(independent)
