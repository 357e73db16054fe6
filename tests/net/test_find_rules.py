"""C-FIND identifier rules over real sockets: hierarchical queries need the unique keys above
their level (PS3.4 C.4.1.2.1), relational ones do not (C.4.1.2.2); an identifier that breaks
a rule fails with 0xA900, an ErrorComment and the OffendingElement (C.4.1.1.4), and the
server goes on serving."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from findfixtures import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    PATIENT_ROOT,
    PATIENT_STUDY_ONLY,
    RELATIONAL,
    SERIES_UID,
    STUDY_ROOT,
    STUDY_UID,
    SUCCESS,
    find,
    identifier,
    instances,
    qr_association,
    send_find,
    series,
    studies,
)
from helpers import echo
from serving import RunningServer

QUERY_RETRIEVE_LEVEL = 0x00080052
STUDY_DATE, STUDY_TIME = 0x00080020, 0x00080030
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E
PROCEDURE_CODE_SEQUENCE = 0x00081032


def two_items() -> list[Dataset]:
    first, second = Dataset(), Dataset()
    first.CodeValue = "HEAD01"
    second.CodeValue = "ABD02"
    return [first, second]


JOHN1 = STUDY_UID["john1"]

INVALID = [
    pytest.param(
        STUDY_ROOT, "SERIES", {"Modality": "MR"}, STUDY_INSTANCE_UID, id="SR-series-no-study-uid"
    ),
    pytest.param(
        STUDY_ROOT,
        "IMAGE",
        {"StudyInstanceUID": JOHN1, "SOPInstanceUID": ""},
        SERIES_INSTANCE_UID,
        id="SR-image-no-series-uid",
    ),
    pytest.param(
        STUDY_ROOT,
        "SERIES",
        {"StudyInstanceUID": "1.2.826.0.1.3680043.10.1255.7001.1.*"},
        STUDY_INSTANCE_UID,
        id="SR-series-study-uid-wildcard",
    ),
    pytest.param(
        PATIENT_ROOT, "STUDY", {"StudyDate": "20240101-"}, PATIENT_ID, id="PR-study-no-patient-id"
    ),
    pytest.param(
        PATIENT_ROOT,
        "SERIES",
        {"PatientID": "PAT-*", "StudyInstanceUID": JOHN1},
        PATIENT_ID,
        id="PR-series-patient-id-wildcard",
    ),
    pytest.param(
        PATIENT_STUDY_ONLY,
        "STUDY",
        {"StudyInstanceUID": ""},
        PATIENT_ID,
        id="PSO-study-no-patient-id",
    ),
    pytest.param(
        STUDY_ROOT, "PATIENT", {"PatientID": ""}, QUERY_RETRIEVE_LEVEL, id="SR-patient-level"
    ),
    pytest.param(
        PATIENT_STUDY_ONLY,
        "SERIES",
        {"PatientID": "PAT-JOHN", "StudyInstanceUID": JOHN1},
        QUERY_RETRIEVE_LEVEL,
        id="PSO-series-level",
    ),
    pytest.param(STUDY_ROOT, None, {"PatientID": ""}, QUERY_RETRIEVE_LEVEL, id="no-level"),
    pytest.param(STUDY_ROOT, "", {"PatientID": ""}, QUERY_RETRIEVE_LEVEL, id="empty-level"),
    pytest.param(STUDY_ROOT, "FOO", {"PatientID": ""}, QUERY_RETRIEVE_LEVEL, id="unknown-level"),
    pytest.param(STUDY_ROOT, "STUDY", {"StudyDate": "2024-13-45x"}, STUDY_DATE, id="bad-DA"),
    pytest.param(STUDY_ROOT, "STUDY", {"StudyDate": "20240230x-"}, STUDY_DATE, id="bad-DA-range"),
    pytest.param(STUDY_ROOT, "STUDY", {"StudyTime": "ab"}, STUDY_TIME, id="bad-TM"),
    pytest.param(
        STUDY_ROOT, "STUDY", {"StudyInstanceUID": "1.2.*"}, STUDY_INSTANCE_UID, id="bad-UI"
    ),
    pytest.param(
        STUDY_ROOT,
        "STUDY",
        {"StudyInstanceUID": f"{JOHN1}\\1.2.x!"},
        STUDY_INSTANCE_UID,
        id="bad-UI-in-list",
    ),
    pytest.param(
        STUDY_ROOT,
        "STUDY",
        {"ProcedureCodeSequence": two_items()},
        PROCEDURE_CODE_SEQUENCE,
        id="sequence-of-two-items",
    ),
]


@pytest.mark.parametrize(("model", "level", "keys", "offending"), INVALID)
def test_invalid_identifier_fails_with_a900(
    find_pacs: RunningServer, model: str, level: str | None, keys: dict[str, object], offending: int
) -> None:
    answer = find(find_pacs.dicom_port, keys, level=level, model=model)
    assert answer.responses == []
    assert answer.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    comment = str(answer.final.get("ErrorComment", ""))
    assert comment
    assert len(comment) <= 64  # LO
    assert answer.final.get("OffendingElement") == offending
    assert echo(find_pacs.dicom_port) == "0x0000"


# -- the same queries, relational -------------------------------------------------------------

RELATIONAL_CASES = [
    pytest.param(
        STUDY_ROOT,
        "SERIES",
        {"Modality": "MR", "SeriesInstanceUID": ""},
        series,
        ("john1/2", "jane1/1", "bob1/1", "non1/1"),
        id="SR-series-no-study-uid",
    ),
    pytest.param(
        STUDY_ROOT,
        "IMAGE",
        {"StudyInstanceUID": JOHN1, "InstanceNumber": "2", "SOPInstanceUID": ""},
        instances,
        ("john1/1/2", "john1/2/2"),
        id="SR-image-no-series-uid",
    ),
    pytest.param(
        STUDY_ROOT,
        "IMAGE",
        {"Modality": "SR", "SOPInstanceUID": ""},
        instances,
        ("john1/3/1",),
        id="SR-image-series-key-only",
    ),
    pytest.param(
        PATIENT_ROOT,
        "STUDY",
        {"StudyDate": "20240201-", "StudyInstanceUID": ""},
        studies,
        ("jane1", "jane2"),
        id="PR-study-no-patient-id",
    ),
    pytest.param(
        PATIENT_ROOT,
        "SERIES",
        {"PatientID": "PAT-JANE", "SeriesInstanceUID": ""},
        series,
        ("jane1/1", "jane2/1"),
        id="PR-series-no-study-uid",
    ),
    pytest.param(
        PATIENT_ROOT,
        "IMAGE",
        {"PatientName": "smithers*", "SOPInstanceUID": ""},
        instances,
        ("bob1/1/1",),
        id="PR-image-patient-key-only",
    ),
    pytest.param(
        PATIENT_STUDY_ONLY,
        "STUDY",
        {"PatientName": "SMITH^JANE", "StudyInstanceUID": ""},
        studies,
        ("jane1", "jane2"),
        id="PSO-study-no-patient-id",
    ),
]


@pytest.mark.parametrize(("model", "level", "keys", "labels", "expected"), RELATIONAL_CASES)
def test_hierarchical_refuses_what_relational_answers(
    find_pacs: RunningServer,
    model: str,
    level: str,
    keys: dict[str, object],
    labels: object,
    expected: tuple[str, ...],
) -> None:
    hierarchical = find(find_pacs.dicom_port, keys, level=level, model=model)
    assert hierarchical.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert hierarchical.responses == []
    relational = find(find_pacs.dicom_port, keys, level=level, model=model, ext=RELATIONAL)
    assert relational.status == SUCCESS
    assert labels(relational.responses) == sorted(expected)  # type: ignore[operator]


def test_relational_is_negotiated_per_sop_class(find_pacs: RunningServer) -> None:
    """Relational accepted for Patient Root leaves Study Root hierarchical on the same
    association (PS3.4 C.5.1.1: the negotiation names one SOP Class)."""
    keys = {"Modality": "MR", "SeriesInstanceUID": ""}
    with qr_association(
        find_pacs.dicom_port, PATIENT_ROOT, RELATIONAL, also=(STUDY_ROOT,)
    ) as assoc:
        patient_root = send_find(assoc, identifier(keys, "SERIES"), PATIENT_ROOT, msg_id=1)
        study_root = send_find(assoc, identifier(keys, "SERIES"), STUDY_ROOT, msg_id=2)
    assert patient_root.status == SUCCESS
    assert series(patient_root.responses) == sorted(["john1/2", "jane1/1", "bob1/1", "non1/1"])
    assert study_root.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert study_root.responses == []


def test_association_goes_on_after_a_failure(find_pacs: RunningServer) -> None:
    with qr_association(find_pacs.dicom_port, STUDY_ROOT) as assoc:
        bad = send_find(assoc, identifier({"StudyDate": "2024-13-45x"}), STUDY_ROOT, msg_id=1)
        good = send_find(
            assoc,
            identifier({"StudyInstanceUID": JOHN1, "SeriesInstanceUID": ""}, "SERIES"),
            STUDY_ROOT,
            msg_id=2,
        )
    assert bad.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert good.status == SUCCESS
    assert series(good.responses) == ["john1/1", "john1/2", "john1/3"]
    assert SERIES_UID["john1/1"] in {str(r.SeriesInstanceUID) for r in good.responses}


def test_server_still_serves_and_logged_no_crash(find_pacs: RunningServer) -> None:
    assert echo(find_pacs.dicom_port) == "0x0000"
    answer = find(find_pacs.dicom_port, {"PatientID": "PAT-JOHN", "StudyInstanceUID": ""})
    assert (answer.status, studies(answer.responses)) == (SUCCESS, ["john1", "john2"])
    assert find_pacs.proc.poll() is None
    assert "Traceback" not in find_pacs.log()
