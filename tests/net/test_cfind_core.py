"""C-FIND over real sockets: the core rules, checked against exact expected answers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from pypacs.archive.ingest import configure_pydicom

from dicomgen import Spec, make_dataset, write_dataset
from helpers import store_files, wait_for
from serving import RunningServer, start_pypacs

STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_STUDY_ONLY = "1.2.840.10008.5.1.4.1.2.3.1"
PENDING, SUCCESS, CANCEL = 0xFF00, 0x0000, 0xFE00

# (patient id, name, charset, study, date, time, description, modalities, instances per series)
STUDIES = [
    ("SMI1", "Smith^John", None, 1, "20240101", "000000", "Chest", ("CT", "MR"), 2),
    ("SMI1", "Smith^John", None, 2, "20240131", "235959.999999", None, ("CT",), 1),
    ("SMI2", "SMITH^JANE", None, 1, "20240201", "101500.25", "Head", ("MR",), 1),
    ("SMO1", "smithers^bob", None, 1, "20231231", "120000", "Knee", ("CR",), 1),
    ("50%_OFF", "Percent^Pat", None, 1, "20240115", "080000", "Odd id", ("US",), 1),
    ("50X_OFF", "Decoy^Pat", None, 1, "20240115", "080000", "Decoy", ("US",), 1),
    ("LAT1", "Müller^Jürgen", "ISO_IR 100", 1, "20240110", "090000", "Latin-1", ("CT",), 1),
    ("UTF1", "Ñoño^José", "ISO_IR 192", 1, "20240111", "090000", "UTF-8", ("MR",), 1),
]


def spec_datasets() -> Iterator[Dataset]:
    for pid, name, charset, study, date, time, description, modalities, per_series in STUDIES:
        for series, modality in enumerate(modalities, start=1):
            for instance in range(1, per_series + 1):
                spec = Spec(
                    pid,
                    name,
                    study,
                    series,
                    instance,
                    modality=modality,
                    study_date=date,
                    charset=charset,
                )
                ds = make_dataset(spec)
                ds.StudyTime = time
                if description is None:
                    del ds.StudyDescription
                else:
                    ds.StudyDescription = description
                if pid == "SMI2":
                    item = Dataset()
                    item.CodeValue = "HEAD01"
                    item.CodingSchemeDesignator = "99TEST"
                    ds.ProcedureCodeSequence = [item]
                ds.PatientAge = "045Y" if pid.startswith("SMI") else "030Y"
                yield ds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    configure_pydicom()  # some identifiers below hold invalid values on purpose
    root = tmp_path_factory.mktemp("cfind")
    folder = root / "in"
    folder.mkdir()
    files = [write_dataset(ds, folder) for ds in spec_datasets()]
    srv = start_pypacs(root / "data", "--max-results", "0")
    statuses = store_files(srv.dicom_port, files)
    assert all(int(s.Status) == 0 for s in statuses.values())
    yield srv
    srv.kill()


def find(
    server: RunningServer,
    keys: dict[str, object],
    *,
    level: str = "STUDY",
    model: str = STUDY_ROOT,
    relational: bool = False,
) -> tuple[list[Dataset], Dataset]:
    ae = AE(ae_title="FINDTEST")
    ae.add_requested_context(model)
    ext: list[Any] = []
    if relational:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        item.service_class_application_information = b"\x01"
        ext.append(item)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="PYPACS", ext_neg=ext)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    answers: list[Dataset] = []
    final = Dataset()
    try:
        for status, ds in assoc.send_c_find(identifier, model):
            if int(status.Status) == PENDING:
                assert ds is not None
                answers.append(ds)
            else:
                final = status
    finally:
        assoc.release()
    return answers, final


def uids(answers: list[Dataset], keyword: str = "PatientID") -> list[str]:
    return sorted(str(getattr(a, keyword)) for a in answers)


def test_one_response_per_patient_with_counts(server: RunningServer) -> None:
    answers, final = find(
        server,
        {
            "PatientID": "",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": "",
        },
        level="PATIENT",
        model=PATIENT_ROOT,
    )
    assert int(final.Status) == SUCCESS
    counts = {
        str(a.PatientID): (
            a.NumberOfPatientRelatedStudies,
            a.NumberOfPatientRelatedSeries,
            a.NumberOfPatientRelatedInstances,
        )
        for a in answers
    }
    assert len(answers) == 7
    assert counts["SMI1"] == (2, 3, 5)
    assert counts["SMI2"] == (1, 1, 1)


def test_study_level_derived_values(server: RunningServer) -> None:
    answers, _ = find(
        server,
        {
            "PatientID": "SMI1",
            "StudyDate": "20240101",
            "ModalitiesInStudy": "",
            "NumberOfStudyRelatedSeries": "",
            "NumberOfStudyRelatedInstances": "",
        },
    )
    (a,) = answers
    assert list(a.ModalitiesInStudy) == ["CT", "MR"]
    assert (a.NumberOfStudyRelatedSeries, a.NumberOfStudyRelatedInstances) == (2, 4)


def test_wildcards_case_insensitive_names(server: RunningServer) -> None:
    answers, _ = find(server, {"PatientName": "SMI*", "PatientID": ""})
    assert uids(answers) == ["SMI1", "SMI1", "SMI2", "SMO1"]
    answers, _ = find(server, {"PatientName": "smith^j?hn", "PatientID": ""})
    assert uids(answers) == ["SMI1", "SMI1"]


def test_percent_and_underscore_are_literal(server: RunningServer) -> None:
    answers, _ = find(server, {"PatientID": "50%_OFF"})
    assert uids(answers) == ["50%_OFF"]
    answers, _ = find(server, {"PatientID": "50%*"})
    assert uids(answers) == ["50%_OFF"]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20240101-20240131", ["50%_OFF", "50X_OFF", "LAT1", "SMI1", "SMI1", "UTF1"]),
        ("-20240101", ["SMI1", "SMO1"]),
        ("20240131-", ["SMI1", "SMI2"]),
    ],
)
def test_date_ranges_include_their_bounds(
    server: RunningServer, dates: str, expected: list[str]
) -> None:
    answers, _ = find(server, {"StudyDate": dates, "PatientID": ""})
    assert uids(answers) == expected


def test_time_range_with_fractions(server: RunningServer) -> None:
    answers, _ = find(server, {"StudyTime": "101500.25-235959.999999", "PatientID": ""})
    assert uids(answers) == ["SMI1", "SMI2", "SMO1"]


def test_modalities_in_study_matches_any_value(server: RunningServer) -> None:
    answers, _ = find(server, {"ModalitiesInStudy": "MR", "PatientID": ""})
    assert uids(answers) == ["SMI1", "SMI2", "UTF1"]


def test_missing_value_comes_back_empty(server: RunningServer) -> None:
    answers, _ = find(
        server, {"PatientID": "SMI1", "StudyDescription": "", "StudyDate": "20240131"}
    )
    (a,) = answers
    assert "StudyDescription" in a
    assert a.StudyDescription in ("", None)


def test_sequence_and_non_indexed_keys(server: RunningServer) -> None:
    item = Dataset()
    item.CodeValue = "HEAD*"
    answers, _ = find(server, {"ProcedureCodeSequence": [item], "PatientID": ""})
    assert uids(answers) == ["SMI2"]
    answers, _ = find(server, {"PatientAge": "045Y", "PatientID": ""})
    assert uids(answers) == ["SMI1", "SMI1", "SMI2"]


def test_character_sets(server: RunningServer) -> None:
    answers, _ = find(
        server, {"PatientName": "Müller*", "SpecificCharacterSet": "ISO_IR 100", "PatientID": ""}
    )
    (a,) = answers
    assert str(a.PatientName) == "Müller^Jürgen"
    assert a.SpecificCharacterSet == "ISO_IR 100"
    answers, _ = find(server, {"PatientID": "UTF1", "PatientName": ""})
    (b,) = answers
    assert str(b.PatientName) == "Ñoño^José"
    assert b.SpecificCharacterSet == "ISO_IR 192"


def test_hierarchical_rules_and_relational(server: RunningServer) -> None:
    answers, final = find(server, {"Modality": "MR", "SeriesInstanceUID": ""}, level="SERIES")
    assert answers == []
    assert int(final.Status) == 0xA900
    assert "StudyInstanceUID" in str(final.ErrorComment)
    assert final.OffendingElement == 0x0020000D
    answers, final = find(
        server,
        {"Modality": "MR", "SeriesInstanceUID": "", "PatientID": ""},
        level="SERIES",
        relational=True,
    )
    assert int(final.Status) == SUCCESS
    assert uids(answers) == ["SMI1", "SMI2", "UTF1"]


@pytest.mark.parametrize(
    ("keys", "level", "model"),
    [
        ({"PatientID": ""}, "PATIENT", STUDY_ROOT),
        ({"PatientID": ""}, "SERIES", PATIENT_STUDY_ONLY),
        ({"StudyDate": "2024-13-45x"}, "STUDY", STUDY_ROOT),
        ({"StudyInstanceUID": "1.2.*"}, "STUDY", STUDY_ROOT),
        ({"StudyDate": ""}, "STUDY", PATIENT_ROOT),  # no PatientID above
    ],
)
def test_invalid_identifiers_get_a900(
    server: RunningServer, keys: dict[str, object], level: str, model: str
) -> None:
    answers, final = find(server, keys, level=level, model=model)
    assert answers == []
    assert int(final.Status) == 0xA900
    assert str(final.ErrorComment)


def test_cancel_stops_between_results(server_factory: object, tmp_path: Path) -> None:
    srv: RunningServer = server_factory()  # type: ignore[operator]
    total = 300
    files = [
        write_dataset(make_dataset(Spec("MANY", "Many^Images", 1, 1, i, rows=2)), tmp_path)
        for i in range(1, total + 1)
    ]
    store_files(srv.dicom_port, files)
    ae = AE(ae_title="CANCEL")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="PYPACS")
    first = dcmread(files[0])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = first.StudyInstanceUID
    identifier.SeriesInstanceUID = first.SeriesInstanceUID
    identifier.SOPInstanceUID = ""
    seen, final = 0, None
    for status, _ in assoc.send_c_find(identifier, STUDY_ROOT, msg_id=7):
        if int(status.Status) == PENDING:
            seen += 1
            if seen == 1:
                assoc.send_c_cancel(7, query_model=STUDY_ROOT)
        else:
            final = int(status.Status)
    assoc.release()
    assert final == CANCEL
    assert 1 <= seen < total
    wait_for(lambda: "1 cancelled" in srv.log(), what="the association's log line")
    assert "Traceback" not in srv.log()


def test_max_results_is_never_a_silent_cut(tmp_path: Path, server: RunningServer) -> None:
    limited = start_pypacs(server.data, "--max-results", "3")  # same archive, second server
    try:
        answers, final = find(limited, {"PatientID": ""})
        assert len(answers) == 3
        assert int(final.Status) == 0xA700
        assert "more than 3 matches" in str(final.ErrorComment)
        answers, final = find(limited, {"PatientID": "SMI1"})
        assert (len(answers), int(final.Status)) == (2, SUCCESS)
    finally:
        limited.kill()


def test_case_sensitive_names_when_configured(server: RunningServer) -> None:
    literal = start_pypacs(server.data, "--pn-case-insensitive", "false")
    try:
        answers, _ = find(literal, {"PatientName": "smith*", "PatientID": ""})
        assert uids(answers) == ["SMO1"]
    finally:
        literal.kill()


def test_findscu_patient_level_and_wildcard(server: RunningServer, tmp_path: Path) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run(
        [
            "findscu",
            "-P",
            "-aec",
            "PYPACS",
            "127.0.0.1",
            str(server.dicom_port),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientName=SMI*",
            "-k",
            "PatientID",
            "-k",
            "NumberOfPatientRelatedStudies",
            "-X",
            "-od",
            str(tmp_path),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    answers = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert sorted((str(a.PatientID), int(a.NumberOfPatientRelatedStudies)) for a in answers) == [
        ("SMI1", 2),
        ("SMI2", 1),
        ("SMO1", 1),
    ]
