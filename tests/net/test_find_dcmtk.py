"""C-FIND from a foreign client, DCMTK's findscu, with the answers read from its
``--extract`` files: one response per patient, wildcards, date ranges, character sets,
the Patient/Study Only model and a refused identifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from findfixtures import (
    ALL_PATIENTS,
    PATIENT,
    PATIENTS,
    STUDY,
    findscu,
    patient_counts,
    studies,
)
from helpers import echo
from serving import RunningServer

PATIENT_KEYS = [
    "QueryRetrieveLevel=PATIENT",
    "PatientID",
    "PatientName",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
]


@pytest.mark.parametrize("model_flag", ["-P", "-O"])
def test_one_response_per_patient(
    find_pacs: RunningServer, tmp_path: Path, model_flag: str
) -> None:
    run = findscu(find_pacs.dicom_port, model_flag, PATIENT_KEYS, tmp_path)
    assert run.returncode == 0, run.output
    got = {
        str(r.PatientID): (
            str(r.PatientName),
            int(r.NumberOfPatientRelatedStudies),
            int(r.NumberOfPatientRelatedSeries),
            int(r.NumberOfPatientRelatedInstances),
        )
        for r in run.responses
    }
    assert len(run.responses) == len(ALL_PATIENTS)
    assert got == {p.patient_id: (p.name, *patient_counts(p)) for p in PATIENTS}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(["PatientName=smith^j?hn"], ["john1", "john2"], id="wildcard-?"),
        pytest.param(["PatientID=50%*"], ["pct1", "und1"], id="wildcard-%-literal"),
        pytest.param(
            ["StudyDate=20240101-20240131"],
            sorted(["john1", "john2", "pct1", "dec1", "und1", "mue1", "non1", "yam1"]),
            id="date-range",
        ),
        pytest.param(["StudyDate=20240201-"], ["jane1", "jane2"], id="date-open-high"),
        pytest.param(["StudyTime=101500.25-101500.25"], ["jane1", "yam1"], id="time-fraction"),
        pytest.param(["ModalitiesInStudy=SR"], ["john1"], id="modalities"),
    ],
)
def test_study_root_study_level(
    find_pacs: RunningServer, tmp_path: Path, keys: list[str], expected: list[str]
) -> None:
    all_keys: list[str | bytes] = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys]
    run = findscu(find_pacs.dicom_port, "-S", all_keys, tmp_path)
    assert run.returncode == 0, run.output
    assert studies(run.responses) == expected


@pytest.mark.parametrize(
    ("charset", "encoding", "name", "patient_id"),
    [
        pytest.param("ISO_IR 100", "latin-1", "Müller*", "PAT-MUELLER", id="latin-1"),
        pytest.param("ISO_IR 192", "utf-8", "Ñoño*", "PAT-NONO", id="utf-8"),
        pytest.param(
            "ISO_IR 192",
            "utf-8",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
            "PAT-YAMADA",
            id="japanese",
        ),
    ],
)
def test_character_sets(
    find_pacs: RunningServer,
    tmp_path: Path,
    charset: str,
    encoding: str,
    name: str,
    patient_id: str,
) -> None:
    # findscu puts the argument's bytes in the identifier as they are: encode them here.
    keys: list[str | bytes] = [
        "QueryRetrieveLevel=STUDY",
        f"SpecificCharacterSet={charset}",
        f"PatientName={name}".encode(encoding),
        "PatientID",
        "StudyInstanceUID",
        "StudyDescription",
    ]
    run = findscu(find_pacs.dicom_port, "-S", keys, tmp_path)
    assert run.returncode == 0, run.output
    (response,) = run.responses
    assert str(response.PatientID) == patient_id
    assert "SpecificCharacterSet" in response
    assert str(response.PatientName) == PATIENT[patient_id].name
    (label,) = studies(run.responses)
    assert str(response.StudyDescription) == STUDY[label].description


def test_refused_identifier_and_the_server_goes_on(
    find_pacs: RunningServer, tmp_path: Path
) -> None:
    keys: list[str | bytes] = ["QueryRetrieveLevel=SERIES", "Modality=MR", "SeriesInstanceUID"]
    run = findscu(find_pacs.dicom_port, "-S", keys, tmp_path)
    assert run.responses == []
    final = run.output.split("Received Final Find Response")[-1].splitlines()[0]
    assert "DataSetDoesNotMatchSOPClass" in final, run.output  # DCMTK's name for 0xA900
    assert echo(find_pacs.dicom_port) == "0x0000"
