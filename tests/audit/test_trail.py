"""The audit trail of a running pypacs: after a C-STORE (storescu), a C-FIND (findscu), a
C-GET (getscu), a STOW-RS, a QIDO-RS, a WADO-RS, a DELETE and a refused association, the
audit file holds exactly those events, with their participants and studies, each message
valid; a UDP syslog receiver gets the same messages; with the receiver stuck, requests
still succeed and what did not fit is counted."""

from __future__ import annotations

import base64
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from lxml import etree

from dicomgen import Spec, study_uid, write
from helpers import wait_for
from rawpeer import raw, read_pdu, rq_bytes
from serving import start_pypacs

Validate = Callable[[str], etree._Element]
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def summary(root: etree._Element) -> tuple[str, str, str]:
    ident = root.find("EventIdentification")
    assert ident is not None
    event = ident.find("EventID")
    assert event is not None
    return (
        str(event.get("csd-code")),
        str(ident.get("EventActionCode")),
        str(ident.get("EventOutcomeIndicator")),
    )


def participants(root: etree._Element) -> list[tuple[str, str, str, list[str]]]:
    return [
        (
            str(p.get("UserID")),
            str(p.get("NetworkAccessPointID")),
            str(p.get("UserIsRequestor")),
            [str(r.get("csd-code")) for r in p.findall("RoleIDCode")],
        )
        for p in root.findall("ActiveParticipant")
    ]


def objects(root: etree._Element) -> dict[str, list[tuple[str, str]]]:
    return {
        str(o.get("ParticipantObjectID")): [
            (str(c.get("UID")), str(c.get("NumberOfInstances"))) for c in o.findall("SOPClass")
        ]
        for o in root.findall("ParticipantObjectIdentification")
    }


def patient_of(root: etree._Element) -> tuple[str, str, str, str]:
    """The Patient participant object: ID, type code, role and ID type code."""
    found = [
        o
        for o in root.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCode") == "1"
    ]
    assert len(found) == 1
    code = found[0].find("ParticipantObjectIDTypeCode")
    assert code is not None and code.get("codeSystemName") == "RFC-3881"
    return (
        str(found[0].get("ParticipantObjectID")),
        str(found[0].get("ParticipantObjectTypeCode")),
        str(found[0].get("ParticipantObjectTypeCodeRole")),
        str(code.get("csd-code")),
    )


def stow_body(path: Path) -> tuple[bytes, str]:
    boundary = "audit-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def dcmtk(*args: str) -> None:
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_session_leaves_exactly_its_events(
    tmp_path: Path, validate: Validate, udp_receiver: tuple[int, object]
) -> None:
    port, received = udp_receiver
    audit = tmp_path / "audit.log"
    files = tmp_path / "files"
    files.mkdir()
    first = [write(Spec("AUD1", "Audit^One", 1, 1, n), files) for n in (1, 2)]
    second = write(Spec("AUD2", "Audit^Two", 1, 1, 1), tmp_path)
    one, two = study_uid("AUD1", 1), study_uid("AUD2", 1)
    srv = start_pypacs(
        tmp_path / "data", "--audit-path", str(audit), "--audit-syslog", f"udp://127.0.0.1:{port}"
    )
    try:
        dicom = str(srv.dicom_port)
        dcmtk(
            "storescu", "-aet", "MODALITY", "-aec", "PYPACS", "127.0.0.1", dicom, *map(str, first)
        )
        dcmtk(
            "findscu",
            "-aet",
            "VIEWER",
            "-aec",
            "PYPACS",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=AUD1",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            dicom,
        )
        out = tmp_path / "got"
        out.mkdir()
        dcmtk(
            "getscu",
            "-aet",
            "VIEWER",
            "-aec",
            "PYPACS",
            "-S",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={one}",
            "127.0.0.1",
            dicom,
        )
        assert len(list(out.iterdir())) == 2
        # An application context that is not DICOM's: refused (PS3.8 9.3.4), a security alert.
        with raw(srv.dicom_port) as peer:
            peer.sendall(rq_bytes(calling_ae="STRANGER", application_context="1.2.3.4"))
            assert read_pdu(peer)[0] == 3  # A-ASSOCIATE-RJ
        web = f"http://127.0.0.1:{srv.http_port}/dicom-web"
        with httpx.Client(timeout=60) as http:
            body, kind = stow_body(second)
            assert (
                http.post(
                    f"{web}/studies", content=body, headers={"Content-Type": kind}
                ).status_code
                == 200
            )
            assert http.get(f"{web}/studies", params={"PatientID": "AUD2"}).status_code == 200
            assert (
                http.get(
                    f"{web}/studies/{two}",
                    headers={"Accept": 'multipart/related; type="application/dicom"'},
                ).status_code
                == 200
            )
            assert http.delete(f"{web}/studies/{two}").status_code == 204
        wait_for(lambda: len(audit.read_text().splitlines()) >= 9, timeout=60)
    finally:
        srv.stop()
    lines = audit.read_text().splitlines()
    roots = [validate(line) for line in lines]
    events = [summary(r) for r in roots]
    assert events == [
        ("110100", "E", "0"),  # application start
        ("110104", "C", "0"),  # storescu's two instances, at the association's end
        ("110112", "E", "0"),  # findscu's query
        ("110104", "R", "0"),  # getscu's retrieve
        ("110113", "E", "4"),  # the refused association
        ("110104", "C", "0"),  # STOW-RS
        ("110112", "E", "0"),  # QIDO-RS
        ("110104", "R", "0"),  # WADO-RS
        ("110105", "D", "0"),  # DELETE of the study
        ("110100", "E", "0"),  # application stop
    ]
    (start, stored, query, got, alert, stow, qido, wado, deleted, stop) = roots
    host = socket.gethostname()
    assert participants(stored)[0] == ("MODALITY", "127.0.0.1", "true", ["110153"])
    assert participants(stored)[1][:3] == ("PYPACS", host, "false")
    # The Patient participant where the patient is known (PS3.15 A.5.3.4): by C-STORE and
    # STOW-RS, not by a Study Root C-GET or WADO-RS naming the study alone.
    assert objects(stored) == {one: [(CT, "2")], "AUD1": []}
    assert patient_of(stored) == ("AUD1", "1", "1", "2")
    assert participants(query)[0] == ("VIEWER", "127.0.0.1", "true", ["110153"])
    found = query.find("ParticipantObjectIdentification")
    assert found is not None and found.get("ParticipantObjectID") == STUDY_ROOT_FIND
    text = found.findtext("ParticipantObjectQuery") or ""
    assert b"AUD1" in base64.b64decode(text)  # the identifier as sent
    assert participants(got)[1] == ("VIEWER", "127.0.0.1", "true", ["110152"])
    assert objects(got) == {one: [(CT, "2")]}
    assert participants(alert)[1][:3] == ("STRANGER", "127.0.0.1", "true")
    reason = alert.findtext(".//ParticipantObjectDescription") or ""
    assert "'STRANGER'" in reason and "application context name not supported" in reason
    assert participants(stow)[0][:3] == ("anonymous", "127.0.0.1", "true")
    assert objects(stow) == {two: [(CT, "1")], "AUD2": []}
    assert patient_of(stow) == ("AUD2", "1", "1", "2")
    assert b"PatientID=AUD2" in base64.b64decode(qido.findtext(".//ParticipantObjectQuery") or "")
    assert objects(wado) == {two: []}
    assert participants(wado)[1][:3] == ("anonymous", "127.0.0.1", "true")
    assert objects(deleted) == {two: []}
    assert participants(deleted)[0][:3] == ("anonymous", "127.0.0.1", "true")
    assert [summary(r) for r in (start, stop)] == [("110100", "E", "0")] * 2
    # The syslog receiver got the same messages (RFC 5424 framing checked in test_messages).
    wait_for(lambda: len(received.all()) == len(lines), timeout=30)  # type: ignore[attr-defined]
    sent = [data.split(b"\xef\xbb\xbf", 1)[1].decode() for data in received.all()]  # type: ignore[attr-defined]
    assert sent == lines


def test_a_stuck_receiver_never_fails_a_request(tmp_path: Path) -> None:
    stuck = socket.create_server(("127.0.0.1", 0))  # takes connections, never a handshake
    audit = tmp_path / "audit.log"
    files = tmp_path / "files"
    files.mkdir()
    paths = [write(Spec("AUD3", "Audit^Three", n, 1, 1), files) for n in range(1, 13)]
    try:
        srv = start_pypacs(
            tmp_path / "data",
            "--audit-path",
            str(audit),
            "--audit-syslog",
            f"tls://127.0.0.1:{stuck.getsockname()[1]}",
            "--audit-queue-size",
            "2",
        )
        try:
            for path in paths:  # one association each: one message each
                dcmtk("storescu", "-aec", "PYPACS", "127.0.0.1", str(srv.dicom_port), str(path))
            with httpx.Client(timeout=60) as http:
                assert (
                    http.get(f"http://127.0.0.1:{srv.http_port}/dicom-web/studies").status_code
                    == 200
                )
            wait_for(lambda: len(audit.read_text().splitlines()) == 14, timeout=60)
            wait_for(lambda: "messages dropped (syslog tls://" in srv.log(), timeout=60)
        finally:
            srv.stop()
    finally:
        stuck.close()
