"""The audit messages (PS3.15 A.5) and where they go, in-process: each builder's message
passes the schema, a message without a required element does not, values cannot break a
line or the XML, the file takes whole lines from several processes, and syslog receivers get
RFC 5424 messages (UDP; TLS with octet counting) while a stuck one only costs drops."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from lxml import etree

from pypacs.audit import AuditOptions, Auditor, NullAuditor, Outcome, Who, open_auditor
from pypacs.audit import messages as m
from pypacs.audit.sinks import frame
from pypacs.errors import ConfigError

from helpers import wait_for

SOURCE = m.Source("PYPACS", "pacs.example")
PEER = Who("MODALITY", "10.0.0.7", ae=True)
USER = Who("alice", "127.0.0.1")
CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
WHEN = 1_700_000_000.25
OK, MINOR = Outcome.SUCCESS, Outcome.MINOR_FAILURE
Validate = Callable[[str], etree._Element]


def code(element: etree._Element) -> str:
    return str(element.get("csd-code"))


def every_message() -> dict[str, str]:
    studies = (("1.2.3", ((CT, 3),)), ("1.2.4", ((CT, 1), ("1.2.840.10008.5.1.4.1.1.4", 2))))
    return {
        "start": m.application_activity(SOURCE, WHEN, True, "root"),
        "stop": m.application_activity(SOURCE, WHEN, False, "root"),
        "stored": m.instances_transferred(SOURCE, WHEN, "C", PEER, None, None, studies, Outcome(0)),
        "moved": m.instances_transferred(
            SOURCE, WHEN, "R", None, Who("WS", "10.0.0.8", ae=True), PEER, studies, Outcome(0)
        ),
        "patient": m.instances_transferred(
            SOURCE, WHEN, "C", PEER, None, None, studies, Outcome(0), ("PAT 1", "P2")
        ),
        "accessed": m.instances_accessed(SOURCE, WHEN, "D", USER, (("1.2.3", ()),), Outcome(0)),
        "deleted": m.study_deleted(SOURCE, WHEN, USER, "1.2.3", Outcome.SUCCESS),
        "query": m.query(SOURCE, WHEN, PEER, FIND, b"\x08\x00\x52\x00", "1.2.840.10008.1.2", OK),
        "qido": m.query(SOURCE, WHEN, USER, FIND, b"/dicom-web/studies?PatientID=1", "", OK),
        "alert": m.security_alert(
            SOURCE, WHEN, m.NODE_AUTHENTICATION, PEER, "MODALITY@10.0.0.7", False, "no", MINOR
        ),
        "user": m.security_alert(
            SOURCE, WHEN, m.USER_SECURITY_ATTRIBUTES_CHANGED, USER, "bob", True, "created", OK
        ),
        "login": m.user_authentication(SOURCE, WHEN, True, USER, Outcome.MINOR_FAILURE),
        "logout": m.user_authentication(SOURCE, WHEN, False, USER, Outcome.SUCCESS),
    }


def test_every_message_passes_the_schema(validate: Validate) -> None:
    events = {}
    for name, text in every_message().items():
        assert "\n" not in text
        root = validate(text)
        ident = root.find("EventIdentification")
        assert ident is not None
        event_id = ident.find("EventID")
        assert event_id is not None
        events[name] = (code(event_id), ident.get("EventActionCode"))
        assert ident.get("EventDateTime") == "2023-11-14T22:13:20.250+00:00"
        source = root.find("AuditSourceIdentification")
        assert source is not None and source.get("AuditSourceID") == "PYPACS"
    assert events == {
        "start": ("110100", "E"),
        "stop": ("110100", "E"),
        "stored": ("110104", "C"),
        "moved": ("110104", "R"),
        "patient": ("110104", "C"),
        "accessed": ("110103", "D"),
        "deleted": ("110105", "D"),
        "query": ("110112", "E"),
        "qido": ("110112", "E"),
        "alert": ("110113", "E"),
        "user": ("110113", "E"),
        "login": ("110114", "E"),
        "logout": ("110114", "E"),
    }


def test_a_transfer_names_its_participants_studies_and_classes(validate: Validate) -> None:
    root = validate(every_message()["moved"])
    people = [
        (p.get("UserID"), p.get("UserIsRequestor"), [code(r) for r in p.findall("RoleIDCode")])
        for p in root.findall("ActiveParticipant")
    ]
    # PS3.15 A.5.3.4: pypacs the Source, the move destination the Destination, the
    # calling AE the requestor.
    assert people == [
        ("PYPACS", "false", ["110153"]),
        ("WS", "false", ["110152"]),
        ("MODALITY", "true", []),
    ]
    studies = {
        o.get("ParticipantObjectID"): [
            (c.get("UID"), c.get("NumberOfInstances")) for c in o.findall("SOPClass")
        ]
        for o in root.findall("ParticipantObjectIdentification")
    }
    assert studies == {
        "1.2.3": [(CT, "3")],
        "1.2.4": [(CT, "1"), ("1.2.840.10008.5.1.4.1.1.4", "2")],
    }


def test_a_query_carries_the_identifier_and_its_syntax(validate: Validate) -> None:
    root = validate(every_message()["query"])
    obj = root.find("ParticipantObjectIdentification")
    assert obj is not None and obj.get("ParticipantObjectID") == FIND
    query, detail = obj.find("ParticipantObjectQuery"), obj.find("ParticipantObjectDetail")
    assert query is not None and detail is not None
    assert base64.b64decode(query.text or "") == b"\x08\x00\x52\x00"
    assert base64.b64decode(detail.get("value") or "") == b"1.2.840.10008.1.2"


@pytest.mark.parametrize(
    ("element", "drop"),
    [
        ("AuditSourceIdentification", "AuditSourceIdentification"),
        ("EventID", "EventIdentification/EventID"),
        ("ActiveParticipant", "ActiveParticipant"),
        (
            "ParticipantObjectIDTypeCode",
            "ParticipantObjectIdentification/ParticipantObjectIDTypeCode",
        ),
    ],
)
def test_a_message_without_a_required_element_fails(
    validate: Validate, element: str, drop: str
) -> None:
    root = validate(every_message()["deleted"])
    for found in root.findall(drop):
        parent = found.getparent()
        assert parent is not None
        parent.remove(found)
    assert root.find(element) is None and root.find(f".//{element}") is None
    with pytest.raises(AssertionError, match="RELAXNG"):
        validate(etree.tostring(root).decode())


def test_values_cannot_break_the_line_or_the_xml(validate: Validate) -> None:
    reason = 'a "bad"\npeer <x> & \x00 co\tntrol\r'
    text = m.security_alert(
        SOURCE, WHEN, m.NODE_AUTHENTICATION, Who("A&B", "h"), "s", False, reason, MINOR
    )
    assert "\n" not in text and "\r" not in text
    root = validate(text)
    description = root.find("ParticipantObjectIdentification/ParticipantObjectDescription")
    assert description is not None
    assert description.text == 'a "bad"\npeer <x> & \ufffd co\tntrol\r'
    assert [p.get("UserID") for p in root.findall("ActiveParticipant")] == ["PYPACS", "A&B"]


def test_the_null_auditor_does_nothing(tmp_path: Path) -> None:
    auditor = open_auditor(AuditOptions("", "", 10, "PYPACS"))
    assert isinstance(auditor, NullAuditor) and not auditor.enabled
    session = auditor.association_started("X", "h")
    session.stored("1.2", CT)
    session.ended()
    auditor.query(PEER, FIND, b"", "", Outcome.SUCCESS)
    auditor.close()
    assert auditor.dropped == 0


def test_an_audit_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "audit.log"
    with pytest.raises(ConfigError, match=rf'\[audit\] path = "{path}": cannot open for appending'):
        Auditor(AuditOptions(str(path), "", 10, "PYPACS"))


def test_lines_of_several_processes_never_interleave(tmp_path: Path, validate: Validate) -> None:
    path = tmp_path / "audit.log"
    script = (
        "import sys\n"
        "from pypacs.audit.sinks import FileSink\n"
        "sink = FileSink(sys.argv[1])\n"
        "for i in range(300):\n"
        "    line = f'<AuditMessage n=\"{sys.argv[2]}-{i}\">' + 'x' * 20000\n"
        "    sink.write(line + '</AuditMessage>')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 1200
    pattern = re.compile(r'<AuditMessage n="(\d)-(\d+)">x{20000}</AuditMessage>')
    seen = sorted(tuple(map(int, pattern.fullmatch(line).groups())) for line in lines)  # type: ignore[union-attr]
    assert seen == [(n, i) for n in range(4) for i in range(300)]


# RFC 5424 6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
SYSLOG = re.compile(
    rb"<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-) \xef\xbb\xbf(<AuditMessage>.*)", re.S
)


def header_and_message(data: bytes) -> tuple[tuple[str, ...], str]:
    match = SYSLOG.fullmatch(data)
    assert match is not None, data[:120]
    fields = tuple(g.decode() for g in match.groups()[:8])
    return fields, match.group(9).decode()


def test_a_syslog_frame_has_the_rfc_5424_header() -> None:
    data = frame("<AuditMessage/>", "pacs.example", WHEN)
    assert (
        data
        == (
            f"<85>1 2023-11-14T22:13:20.250Z pacs.example pypacs {os.getpid()} IHE+RFC-3881 - "
        ).encode()
        + b"\xef\xbb\xbf<AuditMessage/>"
    )


@pytest.mark.parametrize("scheme", ["udp", "tls"])
def test_syslog_receivers_get_what_the_file_gets(
    scheme: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    validate: Validate,
) -> None:
    fixture = "udp_receiver" if scheme == "udp" else "tls_receiver"
    port, received = request.getfixturevalue(fixture)
    ca = str(request.getfixturevalue("tls_files").ca) if scheme == "tls" else ""
    path = tmp_path / "audit.log"
    options = AuditOptions(str(path), f"{scheme}://127.0.0.1:{port}", 100, "PYPACS", tls_ca=ca)
    with Auditor(options) as auditor:
        auditor.application_started()
        auditor.study_deleted(USER, "1.2.3", Outcome.SUCCESS)
        auditor.login(USER, success=False)
        wait_for(lambda: len(received.all()) == 3, timeout=30)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    got = [header_and_message(data) for data in received.all()]
    assert [message for _, message in got] == lines
    for (pri, version, stamp, host, app, procid, msgid, sd), message in got:
        assert (pri, version, app, procid, msgid, sd) == (
            "85",
            "1",
            "pypacs",
            str(os.getpid()),
            "IHE+RFC-3881",
            "-",
        )
        assert host == socket.getfqdn() or host == socket.gethostname()
        assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 600
        validate(message)


def test_a_stuck_tls_receiver_costs_drops_not_waits(tmp_path: Path, tls_files: object) -> None:
    # A port that takes the TCP connection (the backlog) and never answers the handshake.
    stuck = socket.create_server(("127.0.0.1", 0))
    try:
        path = tmp_path / "audit.log"
        port = stuck.getsockname()[1]
        options = AuditOptions(str(path), f"tls://127.0.0.1:{port}", 5, "PYPACS")
        auditor = Auditor(options)
        for n in range(1, 21):
            auditor.login(USER, success=True)
            # The file gets each message while the receiver has not taken one.
            wait_for(lambda: len(path.read_text().splitlines()) == n, timeout=30)  # noqa: B023
        # The syslog queue holds 5, one more is in hand: the rest are dropped, and counted.
        wait_for(lambda: auditor.dropped >= 14, timeout=30)
        auditor.close()
    finally:
        stuck.close()


def test_a_transfer_names_the_patients_it_is_given(validate: Validate) -> None:
    root = validate(every_message()["patient"])
    patients = []
    for o in root.findall("ParticipantObjectIdentification"):
        if o.get("ParticipantObjectTypeCode") != "1":  # PS3.15 A.5.1: a person
            continue
        id_type = o.find("ParticipantObjectIDTypeCode")
        assert id_type is not None
        patients.append(
            (o.get("ParticipantObjectID"), o.get("ParticipantObjectTypeCodeRole"), code(id_type))
        )
    assert patients == [("PAT 1", "1", "2"), ("P2", "1", "2")]
    assert (
        validate(every_message()["stored"]).find(
            "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']"
        )
        is None
    )
