"""C-FIND under server options and interruptions, over real sockets: a maximum number of
matches (a failure past it, never a silent cut), case-sensitive person names, C-CANCEL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomgen import Spec, make_dataset
from findfixtures import (
    ALL_STUDIES,
    CANCEL,
    OUT_OF_RESOURCES,
    PATIENT_ROOT,
    PENDING,
    STUDY_ROOT,
    SUCCESS,
    RawFindClient,
    find,
    findscu,
    identifier,
    patients,
    qr_association,
    send_find,
    serve_datasets,
    studies,
)
from helpers import echo, wait_for
from serving import RunningServer

# The cancel fixture: MANY instances of one series, each holding a long text that a query
# asks back, so that all the responses together (18 MB) cannot sit in the sockets' buffers.
MANY = 60
TEXT_LENGTH = 300_000
BIG = Spec("BIG", "Big^Texts", 1, 1, 1, rows=2)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "find-max3", "--max-results", "3")
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def case_sensitive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "find-pn-cs", "--pn-case-insensitive", "false")
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    def datasets() -> Iterator[Dataset]:
        for number in range(1, MANY + 1):
            ds = make_dataset(replace(BIG, instance=number))
            ds.TextValue = f"{number:06d}" + "x" * TEXT_LENGTH
            yield ds

    srv = serve_datasets(tmp_path_factory, "find-many", datasets=datasets())
    yield srv
    srv.kill()


# -- --max-results 3 -------------------------------------------------------------------------

MAX_CASES = [
    # (keys, level, model, number of matches)
    pytest.param({"PatientName": "SMI*"}, "STUDY", STUDY_ROOT, 5, id="5-studies"),
    pytest.param({"StudyDate": "20240111-20240116"}, "STUDY", STUDY_ROOT, 4, id="4-studies"),
    pytest.param({"PatientAge": "030Y"}, "STUDY", STUDY_ROOT, 7, id="7-studies-no-column"),
    pytest.param(
        {"AdmittingDiagnosesDescription": "*"}, "STUDY", STUDY_ROOT, 11, id="11-universal-star"
    ),
    pytest.param({"PatientID": ""}, "PATIENT", PATIENT_ROOT, 9, id="9-patients"),
]


@pytest.mark.parametrize(("keys", "level", "model", "matches"), MAX_CASES)
def test_past_the_maximum_the_query_fails(
    limited: RunningServer, keys: dict[str, object], level: str, model: str, matches: int
) -> None:
    assert matches > 3
    answer = find(limited.dicom_port, {"PatientID": "", **keys}, level=level, model=model)
    assert answer.pending == [PENDING] * 3
    assert answer.status == OUT_OF_RESOURCES
    assert str(answer.final.get("ErrorComment", ""))
    assert echo(limited.dicom_port) == "0x0000"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param({"StudyDate": "20240115-20240116"}, ("pct1", "dec1", "und1"), id="3"),
        pytest.param({"PatientAge": "058Y"}, ("jane1", "jane2"), id="2-no-column"),
        pytest.param({"PatientID": "PAT-JOHN"}, ("john1", "john2"), id="2"),
    ],
)
def test_up_to_the_maximum_the_query_succeeds(
    limited: RunningServer, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    answer = find(limited.dicom_port, {"StudyInstanceUID": "", **keys})
    assert answer.status == SUCCESS
    assert studies(answer.responses) == sorted(expected)


# -- --pn-case-insensitive false -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("smith*", ("bob1",), id="lower"),
        pytest.param("SMITH*", ("jane1", "jane2"), id="upper"),
        pytest.param("Smith*", ("john1", "john2"), id="mixed"),
        pytest.param("smith^john", (), id="single-other-case"),
        pytest.param("Smith^John", ("john1", "john2"), id="single-same-case"),
        pytest.param("smith^j?hn", (), id="question-mark-other-case"),
        pytest.param("müller*", (), id="non-ascii-other-case"),
        pytest.param("Müller*", ("mue1",), id="non-ascii-same-case"),
        pytest.param("*", ALL_STUDIES, id="universal"),
    ],
)
def test_case_sensitive_person_names(
    case_sensitive: RunningServer, name: str, expected: tuple[str, ...]
) -> None:
    answer = find(case_sensitive.dicom_port, {"PatientName": name, "StudyInstanceUID": ""})
    assert answer.status == SUCCESS
    assert studies(answer.responses) == sorted(expected)


def test_case_sensitive_patient_level(case_sensitive: RunningServer) -> None:
    answer = find(
        case_sensitive.dicom_port,
        {"PatientName": "smith*", "PatientID": ""},
        level="PATIENT",
        model=PATIENT_ROOT,
    )
    assert patients(answer.responses) == ["PAT-BOB"]


# -- C-CANCEL (PS3.4 C.4.1.2.3, PS3.7 9.3.2.3) ---------------------------------------------

BIG_UIDS = {
    "StudyInstanceUID": make_dataset(BIG).StudyInstanceUID,
    "SeriesInstanceUID": make_dataset(BIG).SeriesInstanceUID,
}
ALL_TEXTS = {**BIG_UIDS, "SOPInstanceUID": "", "TextValue": ""}


def test_cancel_after_the_first_response(many: RunningServer) -> None:
    with qr_association(many.dicom_port, STUDY_ROOT) as assoc:
        received, final = 0, None
        for status, ds in assoc.send_c_find(identifier(ALL_TEXTS, "IMAGE"), STUDY_ROOT, msg_id=7):
            code = int(status.Status)
            if code == PENDING:
                received += 1
                assert ds is not None
                assert len(ds.TextValue) == 6 + TEXT_LENGTH
                if received == 1:
                    assoc.send_c_cancel(7, query_model=STUDY_ROOT)
            else:
                final = code
        # The association is still good: the next query on it is answered in full.
        uids = {**BIG_UIDS, "SOPInstanceUID": ""}
        after = send_find(assoc, identifier(uids, "IMAGE"), STUDY_ROOT, msg_id=8)
    assert final == CANCEL
    assert 1 <= received < MANY
    assert (after.status, len(after.responses)) == (SUCCESS, MANY)
    assert echo(many.dicom_port) == "0x0000"


def test_cancel_reaches_a_query_whose_reader_is_slow(many: RunningServer) -> None:
    """The SCU reads one response, then reads nothing for a while before it cancels.

    The responses do not fit in the sockets' buffers, so a server that produces them as
    they are sent is still inside the query when the C-CANCEL comes, and stops."""
    client = RawFindClient(many.dicom_port, STUDY_ROOT)
    try:
        client.send_find(identifier(ALL_TEXTS, "IMAGE"), STUDY_ROOT, msg_id=3)
        assert client.read_response()[0] == PENDING
        # The scenario itself, not a wait for readiness: a reader that pauses. A server
        # that encodes responses only as fast as they leave cannot finish in the meantime.
        time.sleep(0.5)
        client.send_cancel(3)
        received, status = 1, PENDING
        while status == PENDING:
            status, _ = client.read_response()
            received += status == PENDING
    finally:
        client.close()
    assert (status, received < MANY) == (CANCEL, True), f"{received} responses, {status:#06x}"
    assert echo(many.dicom_port) == "0x0000"


def test_cancel_sent_with_the_request(many: RunningServer) -> None:
    """A C-CANCEL right behind its C-FIND-RQ (one write) cancels it, however early."""
    client = RawFindClient(many.dicom_port, STUDY_ROOT)
    try:
        client.send_find_then_cancel(identifier(ALL_TEXTS, "IMAGE"), STUDY_ROOT, msg_id=5)
        received, status = 0, PENDING
        while status == PENDING:
            status, _ = client.read_response()
            received += status == PENDING
    finally:
        client.close()
    assert (status, received < MANY) == (CANCEL, True), f"{received} responses, {status:#06x}"


def test_findscu_cancel(many: RunningServer, tmp_path: Path) -> None:
    keys = ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "TextValue"]
    keys += [f"{k}={v}" for k, v in BIG_UIDS.items()]
    run = findscu(many.dicom_port, "-S", keys, tmp_path, "--cancel", "2")
    assert run.returncode == 0, run.output
    assert 2 <= len(run.responses) < MANY
    final = run.output.split("Received Final Find Response")[-1].splitlines()[0]
    assert "Cancel" in final, run.output[-2000:]
    wait_for(lambda: "cancelled" in many.log(), what="the cancel in the server log")
    assert echo(many.dicom_port) == "0x0000"
