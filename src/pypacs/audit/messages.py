"""DICOM audit messages (PS3.15 A.5.1, "DICOM Audit Message Schema"), built as one line of
XML each from the small tuples the front doors queue.

Every builder takes the audit source, the event's time (seconds since the epoch) and the
event's own fields, and returns the message as text without a line break (line breaks and
tabs in values are written as character references, characters XML 1.0 cannot carry are
replaced), so that a file holds one message a line.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple

# A coded value (PS3.15 A.5.1 CodedValueType): code, coding scheme designator, meaning.
Code = tuple[str, str, str]

# PS3.16 CID 400 "Audit Event ID".
APPLICATION_ACTIVITY: Code = ("110100", "DCM", "Application Activity")
INSTANCES_ACCESSED: Code = ("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED: Code = ("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED: Code = ("110105", "DCM", "DICOM Study Deleted")
QUERY: Code = ("110112", "DCM", "Query")
SECURITY_ALERT: Code = ("110113", "DCM", "Security Alert")
USER_AUTHENTICATION: Code = ("110114", "DCM", "User Authentication")
# PS3.16 CID 401 "Audit Event Type Code" (Application Activity, User Authentication) and
# CID 403 "Security Alert Type Code".
APPLICATION_START: Code = ("110120", "DCM", "Application Start")
APPLICATION_STOP: Code = ("110121", "DCM", "Application Stop")
LOGIN: Code = ("110122", "DCM", "Login")
LOGOUT: Code = ("110123", "DCM", "Logout")
NODE_AUTHENTICATION: Code = ("110126", "DCM", "Node Authentication")
USE_OF_RESTRICTED_FUNCTION: Code = ("110132", "DCM", "Use of Restricted Function")
USER_SECURITY_ATTRIBUTES_CHANGED: Code = ("110137", "DCM", "User Security Attributes Changed")
# PS3.16 CID 402 "Audit Active Participant Role ID Code".
APPLICATION: Code = ("110150", "DCM", "Application")
APPLICATION_LAUNCHER: Code = ("110151", "DCM", "Application Launcher")
DESTINATION: Code = ("110152", "DCM", "Destination Role ID")
SOURCE: Code = ("110153", "DCM", "Source Role ID")
# PS3.16 CID 404 "Audit Participant Object ID Type Code", and RFC 3881's user identifier.
STUDY_INSTANCE_UID: Code = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID")
NODE_ID: Code = ("110182", "DCM", "Node ID")
USER_IDENTIFIER: Code = ("11", "RFC-3881", "User Identifier")
PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number")
# PS3.15 A.5.1 AuditSourceTypeCode 4: "Application Server process tier in a multi-tier system".
APPLICATION_SERVER: Code = ("4", "DCM", "Application Server Process")

# PS3.15 A.5.1 ParticipantObjectTypeCode and ParticipantObjectTypeCodeRole.
_PERSON, _SYSTEM_OBJECT = 1, 2
_ROLE_PATIENT, _ROLE_REPORT, _ROLE_SECURITY_USER, _ROLE_SECURITY_RESOURCE = 1, 3, 11, 13
# PS3.15 A.5.1 NetworkAccessPointTypeCode: 1 machine name, 2 IP address.
_MACHINE_NAME, _IP_ADDRESS = "1", "2"


class Outcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # the action was not completed, or completed in part
    SERIOUS_FAILURE = 8  # the action was refused or failed
    MAJOR_FAILURE = 12  # the action made the function unavailable


class Who(NamedTuple):
    """A participant the caller names: a user or calling AE title, and where it called from."""

    user: str
    address: str
    ae: bool = False  # a DICOM application entity (its AE title is ``user``)


@dataclass(frozen=True)
class Source:
    """This pypacs: its AE title (the audit source and its participant) and host name."""

    ae_title: str
    host: str

    @property
    def me(self) -> Who:
        return Who(self.ae_title, self.host, ae=True)


# Characters XML 1.0 cannot hold (C0 controls but tab, line feed and carriage return).
_INVALID = {c: "\ufffd" for c in range(32) if c not in (9, 10, 13)}
_ESCAPES = {
    **_INVALID,
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    # As references, so that a message stays one line and attribute values keep them.
    9: "&#9;",
    10: "&#10;",
    13: "&#13;",
}


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def _attrs(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f' {k}="{_escape(str(v))}"' for k, v in pairs if v is not None and v != "")


def _element(name: str, pairs: Iterable[tuple[str, object]] = (), content: str = "") -> str:
    attrs = _attrs(pairs)
    return f"<{name}{attrs}>{content}</{name}>" if content else f"<{name}{attrs}/>"


def _coded(name: str, code: Code) -> str:
    # PS3.15 A.5.1 CodedValueType: csd-code, codeSystemName and originalText.
    return _element(
        name, (("csd-code", code[0]), ("codeSystemName", code[1]), ("originalText", code[2]))
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _timestamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def _event(
    event_id: Code,
    action: str,
    when: float,
    outcome: Outcome,
    type_code: Code | None = None,
) -> str:
    # PS3.15 A.5.1 EventIdentification: EventActionCode C/R/U/D/E, EventDateTime,
    # EventOutcomeIndicator; EventID, then EventTypeCode.
    content = _coded("EventID", event_id)
    if type_code is not None:
        content += _coded("EventTypeCode", type_code)
    return _element(
        "EventIdentification",
        (
            ("EventActionCode", action),
            ("EventDateTime", _timestamp(when)),
            ("EventOutcomeIndicator", int(outcome)),
        ),
        content,
    )


def _address_type(address: str) -> str:
    return _IP_ADDRESS if address and (address[0].isdigit() or ":" in address) else _MACHINE_NAME


def _participant(who: Who, requestor: bool, role: Code | None = None) -> str:
    # PS3.15 A.5.1 ActiveParticipant; A.5.2.1: an application entity's AlternativeUserID
    # is "AETITLES=" and its AE titles.
    return _element(
        "ActiveParticipant",
        (
            ("UserID", who.user or "?"),
            ("AlternativeUserID", f"AETITLES={who.user}" if who.ae else None),
            ("UserIsRequestor", "true" if requestor else "false"),
            ("NetworkAccessPointID", who.address or None),
            ("NetworkAccessPointTypeCode", _address_type(who.address) if who.address else None),
        ),
        _coded("RoleIDCode", role) if role is not None else "",
    )


def _audit_source(source: Source) -> str:
    return _element(
        "AuditSourceIdentification",
        (("AuditEnterpriseSiteID", source.host), ("AuditSourceID", source.ae_title)),
        _coded("AuditSourceTypeCode", APPLICATION_SERVER),
    )


def _study(uid: str, sop_classes: Iterable[tuple[str, int]] = ()) -> str:
    classes = "".join(
        _element("SOPClass", (("UID", c), ("NumberOfInstances", n))) for c, n in sop_classes
    )
    return _element(
        "ParticipantObjectIdentification",
        (
            ("ParticipantObjectID", uid),
            ("ParticipantObjectTypeCode", _SYSTEM_OBJECT),
            ("ParticipantObjectTypeCodeRole", _ROLE_REPORT),
        ),
        _coded("ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID) + classes,
    )


def _patient(patient_id: str) -> str:
    # PS3.15 A.5.3.3, A.5.3.4: the Patient participant object, a person in the patient
    # role, identified by its Patient ID (RFC 3881's "Patient Number").
    return _element(
        "ParticipantObjectIdentification",
        (
            ("ParticipantObjectID", patient_id),
            ("ParticipantObjectTypeCode", _PERSON),
            ("ParticipantObjectTypeCodeRole", _ROLE_PATIENT),
        ),
        _coded("ParticipantObjectIDTypeCode", PATIENT_NUMBER),
    )


def _message(*parts: str) -> str:
    return "<AuditMessage>" + "".join(parts) + "</AuditMessage>"


Studies = tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # (study, ((class, count), ...))


def application_activity(source: Source, when: float, started: bool, launcher: str) -> str:
    """PS3.15 A.5.3.1 Application Activity: pypacs started or stopped, by whom."""
    return _message(
        _event(
            APPLICATION_ACTIVITY,
            "E",
            when,
            Outcome.SUCCESS,
            APPLICATION_START if started else APPLICATION_STOP,
        ),
        _participant(source.me, False, APPLICATION),
        _participant(Who(launcher, ""), True, APPLICATION_LAUNCHER),
        _audit_source(source),
    )


def instances_transferred(
    source: Source,
    when: float,
    action: str,
    sender: Who | None,
    receiver: Who | None,
    requestor: Who | None,
    studies: Studies,
    outcome: Outcome,
    patients: tuple[str, ...] = (),
) -> str:
    """PS3.15 A.5.3.4 DICOM Instances Transferred: action C (received, new), U (received,
    some already held) or R (sent); the requestor is the receiver unless named (C-MOVE).
    A sender or receiver left None is this pypacs; the patients are those the caller knew
    (their Patient IDs)."""
    sender, receiver = sender or source.me, receiver or source.me
    parts = [
        _event(INSTANCES_TRANSFERRED, action, when, outcome),
        _participant(sender, requestor is None and action != "R", SOURCE),
        _participant(receiver, requestor is None and action == "R", DESTINATION),
    ]
    if requestor is not None:
        parts.append(_participant(requestor, True))
    parts.append(_audit_source(source))
    parts.extend(_study(uid, classes) for uid, classes in studies)
    parts.extend(_patient(patient) for patient in patients if patient)
    return _message(*parts)


def instances_accessed(
    source: Source, when: float, action: str, who: Who, studies: Studies, outcome: Outcome
) -> str:
    """PS3.15 A.5.3.3 DICOM Instances Accessed (here: series or instances deleted, D)."""
    return _message(
        _event(INSTANCES_ACCESSED, action, when, outcome),
        _participant(who, True),
        _participant(source.me, False),
        _audit_source(source),
        *(_study(uid, classes) for uid, classes in studies),
    )


def study_deleted(source: Source, when: float, who: Who, study: str, outcome: Outcome) -> str:
    """PS3.15 A.5.3.5 DICOM Study Deleted."""
    return _message(
        _event(STUDY_DELETED, "D", when, outcome),
        _participant(who, True),
        _participant(source.me, False),
        _audit_source(source),
        _study(study),
    )


def query(
    source: Source,
    when: float,
    requestor: Who,
    sop_class: str,
    query_bytes: bytes,
    transfer_syntax: str,
    outcome: Outcome,
) -> str:
    """PS3.15 A.5.3.10 Query: the requestor is the Source, pypacs the Destination; the query
    itself in ParticipantObjectQuery (a C-FIND identifier as sent, with its transfer syntax
    in a ParticipantObjectDetail; a QIDO-RS request's target as UTF-8 text)."""
    detail = (
        _element(
            "ParticipantObjectDetail",
            (("type", "TransferSyntax"), ("value", _b64(transfer_syntax.encode("ascii")))),
        )
        if transfer_syntax
        else ""
    )
    return _message(
        _event(QUERY, "E", when, outcome),
        _participant(requestor, True, SOURCE),
        _participant(source.me, False, DESTINATION),
        _audit_source(source),
        _element(
            "ParticipantObjectIdentification",
            (
                ("ParticipantObjectID", sop_class),
                ("ParticipantObjectTypeCode", _SYSTEM_OBJECT),
                ("ParticipantObjectTypeCodeRole", _ROLE_REPORT),
            ),
            _coded("ParticipantObjectIDTypeCode", SOP_CLASS_UID)
            + _element("ParticipantObjectQuery", (), _b64(query_bytes))
            + detail,
        ),
    )


def security_alert(
    source: Source,
    when: float,
    type_code: Code,
    who: Who,
    subject: str,
    subject_is_user: bool,
    reason: str,
    outcome: Outcome,
) -> str:
    """PS3.15 A.5.3.11 Security Alert: pypacs reports, ``who`` performed; the alert subject
    (a node or a user) with the reason as its description."""
    id_type, object_type, role = (
        (USER_IDENTIFIER, _PERSON, _ROLE_SECURITY_USER)
        if subject_is_user
        else (NODE_ID, _SYSTEM_OBJECT, _ROLE_SECURITY_RESOURCE)
    )
    return _message(
        _event(SECURITY_ALERT, "E", when, outcome, type_code),
        _participant(source.me, False),
        _participant(who, True),
        _audit_source(source),
        _element(
            "ParticipantObjectIdentification",
            (
                ("ParticipantObjectID", subject or "?"),
                ("ParticipantObjectTypeCode", object_type),
                ("ParticipantObjectTypeCodeRole", role),
            ),
            _coded("ParticipantObjectIDTypeCode", id_type)
            + _element(
                "ParticipantObjectDetail",
                (("type", "Alert Description"), ("value", _b64(reason.encode()))),
            )
            + _element("ParticipantObjectDescription", (), _escape(reason)),
        ),
    )


def user_authentication(
    source: Source, when: float, login: bool, who: Who, outcome: Outcome
) -> str:
    """PS3.15 A.5.3.12 User Authentication: a log-in (or log-out), successful or not."""
    return _message(
        _event(USER_AUTHENTICATION, "E", when, outcome, LOGIN if login else LOGOUT),
        _participant(who, True),
        _participant(source.me, False),
        _audit_source(source),
    )
