"""PDUs and their items (PS3.8 9.3, Annex D; PS3.7 Annex D): pure functions over bytes.

``encode(pdu)`` gives a whole PDU, header included; ``decode(pdu_type, body)`` takes the
variable field after the 6-byte header and checks every length against its parent before
reading it, so no length field makes it allocate more than the body it was given.
Malformed input raises ``PduError`` carrying the A-ABORT reason to answer with (9.3.8).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from pypacs.errors import PypacsError
from pypacs.model.uid import is_acceptable_uid

# PDU types (PS3.8 Table 9-11 and 9.3.3-9.3.8).
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

# Item types (PS3.8 9.3.2, 9.3.3; Annex D; PS3.7 D.3.3).
ITEM_APPLICATION_CONTEXT = 0x10
ITEM_CONTEXT_RQ = 0x20
ITEM_CONTEXT_AC = 0x21
ITEM_ABSTRACT_SYNTAX = 0x30
ITEM_TRANSFER_SYNTAX = 0x40
ITEM_USER_INFORMATION = 0x50
SUB_MAX_LENGTH = 0x51
SUB_IMPLEMENTATION_CLASS_UID = 0x52
SUB_ASYNC_OPS = 0x53
SUB_ROLE_SELECTION = 0x54
SUB_IMPLEMENTATION_VERSION_NAME = 0x55
SUB_EXTENDED_NEGOTIATION = 0x56
SUB_COMMON_EXTENDED_NEGOTIATION = 0x57
SUB_USER_IDENTITY_RQ = 0x58
SUB_USER_IDENTITY_AC = 0x59

# Presentation context results (PS3.8 Table 9-18).
PC_ACCEPTANCE = 0
PC_USER_REJECTION = 1
PC_NO_REASON = 2
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ASSOCIATE-RJ result, source and reasons (PS3.8 Table 9-21).
RJ_PERMANENT = 1
RJ_TRANSIENT = 2
RJ_SOURCE_USER = 1  # DICOM UL service-user
RJ_SOURCE_ACSE = 2  # DICOM UL service-provider, ACSE related function
RJ_SOURCE_PRESENTATION = 3  # DICOM UL service-provider, Presentation related function
RJ_USER_NO_REASON = 1
RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
RJ_USER_CALLING_AE_NOT_RECOGNIZED = 3
RJ_USER_CALLED_AE_NOT_RECOGNIZED = 7
RJ_ACSE_NO_REASON = 1
RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED = 2
RJ_PRESENTATION_TEMPORARY_CONGESTION = 1
RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2

# A-ABORT source and reasons (PS3.8 Table 9-26).
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER_VALUE = 6

# User identity types (PS3.7 Table D.3-14).
IDENTITY_USERNAME = 1
IDENTITY_USERNAME_PASSCODE = 2
IDENTITY_KERBEROS = 3
IDENTITY_SAML = 4
IDENTITY_JWT = 5

DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 Annex A.2.1
MAX_CONTEXTS = 128  # odd ids 1..255 (PS3.8 9.3.2.2)
AE_LENGTH = 16
_UID_FIELD_LENGTH = 72  # 64 characters (PS3.5 6.2) and some NUL padding; the cache stays small
VERSION_NAME_LENGTH = 16  # PS3.7 D.3.3.2.3
_FIXED_ASSOCIATE = 68  # version, reserved, called AE, calling AE, reserved (PS3.8 Table 9-11)
_PDV_CONTROL_COMMAND = 0x01  # PS3.8 Annex E.2: bit 0 set, a command
_PDV_CONTROL_LAST = 0x02  # bit 1 set, the last fragment

# AE VR: default repertoire without backslash and control characters (PS3.5 6.2).
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
_HEADER = struct.Struct(">BxI")
_ITEM = struct.Struct(">BxH")
_PDV = struct.Struct(">IBB")
_U16 = struct.Struct(">H")


class PduError(PypacsError):
    """A PDU or item is malformed; ``abort_reason`` is the A-ABORT reason to send (9.3.8)."""

    def __init__(self, message: str, abort_reason: int = ABORT_INVALID_PARAMETER_VALUE) -> None:
        super().__init__(message)
        self.abort_reason = abort_reason


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """A proposed presentation context (PS3.8 9.3.2.2)."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextAC:
    """A presentation context answered; ``transfer_syntax`` is "" unless accepted (9.3.3.2)."""

    id: int
    result: int
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU role selection for one SOP class (PS3.7 D.3.3.4)."""

    sop_class: str
    scu: bool
    scp: bool


@dataclass(frozen=True, slots=True)
class ExtendedNegotiation:
    """SOP Class Extended Negotiation (PS3.7 D.3.3.5): the service-class bytes as sent."""

    sop_class: str
    info: bytes


@dataclass(frozen=True, slots=True)
class CommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation (PS3.7 D.3.3.6)."""

    sop_class: str
    service_class: str
    related: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserIdentityRQ:
    """User Identity Negotiation, requestor side (PS3.7 D.3.3.7.1)."""

    kind: int
    response_requested: bool
    primary: bytes
    secondary: bytes = b""


@dataclass(frozen=True, slots=True)
class UserIdentityAC:
    """User Identity Negotiation, acceptor side (PS3.7 D.3.3.7.2)."""

    response: bytes


@dataclass(frozen=True, slots=True)
class UserInformation:
    """The user information item's sub-items (PS3.8 9.3.2.3, Annex D; PS3.7 D.3.3)."""

    max_length: int | None = None  # 0: no limit (PS3.8 D.1.1)
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_ops: tuple[int, int] | None = None  # (invoked, performed)
    roles: tuple[RoleSelection, ...] = ()
    extended: tuple[ExtendedNegotiation, ...] = ()
    common_extended: tuple[CommonExtendedNegotiation, ...] = ()
    identity_rq: UserIdentityRQ | None = None
    identity_ac: UserIdentityAC | None = None


@dataclass(frozen=True, slots=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2)."""

    called_ae: str
    calling_ae: str
    contexts: tuple[PresentationContextRQ, ...]
    user: UserInformation
    application_context: str = DICOM_APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(frozen=True, slots=True)
class AssociateAC:
    """A-ASSOCIATE-AC (PS3.8 9.3.3); the AE titles echo the request's, untested (9.3.3)."""

    called_ae: str
    calling_ae: str
    contexts: tuple[PresentationContextAC, ...]
    user: UserInformation
    application_context: str = DICOM_APPLICATION_CONTEXT
    protocol_version: int = 1


@dataclass(frozen=True, slots=True)
class AssociateRJ:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): the RJ_* constants."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class PDV:
    """One presentation data value (PS3.8 9.3.5.1, Annex E.2)."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF (PS3.8 9.3.5)."""

    pdvs: tuple[PDV, ...]


@dataclass(frozen=True, slots=True)
class ReleaseRQ:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""


@dataclass(frozen=True, slots=True)
class ReleaseRP:
    """A-RELEASE-RP (PS3.8 9.3.7)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """A-ABORT (PS3.8 9.3.8): the ABORT_* constants."""

    source: int
    reason: int


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort

_RELEASE_BODY = b"\x00\x00\x00\x00"


# ---------------------------------------------------------------- fixed headers


def read_header(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """The PDU type and the length of the variable field that follows (PS3.8 9.3.1).

    Raises:
        PduError: not six bytes, or a PDU type PS3.8 does not define.
    """
    if len(header) != 6:
        raise PduError(f"a PDU header is 6 bytes, not {len(header)}", ABORT_UNRECOGNIZED_PDU)
    pdu_type, length = _HEADER.unpack(header)
    if not ASSOCIATE_RQ <= pdu_type <= ABORT:
        raise PduError(f"unknown PDU type {pdu_type:#04x}", ABORT_UNRECOGNIZED_PDU)
    return pdu_type, length


def pdata_header(length: int) -> bytes:
    """The 6-byte header of a P-DATA-TF whose variable field (its PDV items) is ``length``."""
    return _HEADER.pack(P_DATA_TF, length)


def pdv_header(context_id: int, is_command: bool, is_last: bool, data_length: int) -> bytes:
    """The 6-byte head of a PDV item carrying ``data_length`` bytes (PS3.8 9.3.5.1, E.2)."""
    control = (_PDV_CONTROL_COMMAND if is_command else 0) | (_PDV_CONTROL_LAST if is_last else 0)
    return _PDV.pack(data_length + 2, context_id, control)


def iter_pdvs(body: bytes | bytearray | memoryview) -> Iterator[PDV]:
    """The PDVs of a P-DATA-TF's variable field, their data as views of ``body`` (no copy).

    Raises:
        PduError: no PDV, or an item length below 2 or past the end (when reached).
    """
    view = memoryview(body)
    end = len(view)
    if end == 0:
        raise PduError("P-DATA-TF without a PDV item")  # one or more (PS3.8 9.3.5)
    pos = 0
    unpack = _PDV.unpack_from
    while pos < end:
        if end - pos < 6:
            raise PduError("PDV item cut short")
        length, context_id, control = unpack(view, pos)
        stop = pos + 4 + length
        if length < 2 or stop > end:
            raise PduError(f"PDV item length {length} does not fit its P-DATA-TF")
        yield PDV(
            context_id,
            bool(control & _PDV_CONTROL_COMMAND),
            bool(control & _PDV_CONTROL_LAST),
            view[pos + 6 : stop],
        )
        pos = stop


# ---------------------------------------------------------------- encoding


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item {item_type:#04x} of {len(value)} bytes exceeds 65535")
    return _ITEM.pack(item_type, len(value)) + value


def _ascii(text: str) -> bytes:
    return text.encode("ascii")


def _lv(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def _ae_field(title: str) -> bytes:
    raw = title.encode("ascii")
    if len(raw) > AE_LENGTH:
        raise ValueError(f"AE title {title!r} exceeds 16 characters")
    return raw.ljust(AE_LENGTH, b" ")


def _encode_user(user: UserInformation) -> bytes:
    parts = []  # ascending sub-item type: some older peers expect it (PS3.8 9.3.2.3)
    if user.max_length is not None:
        parts.append(_item(SUB_MAX_LENGTH, struct.pack(">I", user.max_length)))
    if user.implementation_class_uid is not None:
        parts.append(_item(SUB_IMPLEMENTATION_CLASS_UID, _ascii(user.implementation_class_uid)))
    if user.async_ops is not None:
        parts.append(_item(SUB_ASYNC_OPS, struct.pack(">HH", *user.async_ops)))
    for role in user.roles:
        value = _lv(_ascii(role.sop_class)) + bytes((role.scu, role.scp))
        parts.append(_item(SUB_ROLE_SELECTION, value))
    if user.implementation_version_name is not None:
        name = _ascii(user.implementation_version_name)
        parts.append(_item(SUB_IMPLEMENTATION_VERSION_NAME, name))
    for ext in user.extended:
        parts.append(_item(SUB_EXTENDED_NEGOTIATION, _lv(_ascii(ext.sop_class)) + ext.info))
    for common in user.common_extended:
        related = b"".join(_lv(_ascii(uid)) for uid in common.related)
        value = _lv(_ascii(common.sop_class)) + _lv(_ascii(common.service_class)) + _lv(related)
        parts.append(_item(SUB_COMMON_EXTENDED_NEGOTIATION, value))
    if user.identity_rq is not None:
        ident = user.identity_rq
        head = bytes((ident.kind, ident.response_requested))
        parts.append(_item(SUB_USER_IDENTITY_RQ, head + _lv(ident.primary) + _lv(ident.secondary)))
    if user.identity_ac is not None:
        parts.append(_item(SUB_USER_IDENTITY_AC, _lv(user.identity_ac.response)))
    return _item(ITEM_USER_INFORMATION, b"".join(parts))


def _encode_associate(pdu: AssociateRQ | AssociateAC) -> bytes:
    parts = [
        struct.pack(">HH", pdu.protocol_version, 0),
        _ae_field(pdu.called_ae),
        _ae_field(pdu.calling_ae),
        bytes(32),
        _item(ITEM_APPLICATION_CONTEXT, _ascii(pdu.application_context)),
    ]
    if isinstance(pdu, AssociateRQ):
        pdu_type = ASSOCIATE_RQ
        for rq in pdu.contexts:
            syntaxes = [_item(ITEM_ABSTRACT_SYNTAX, _ascii(rq.abstract_syntax))]
            syntaxes += [_item(ITEM_TRANSFER_SYNTAX, _ascii(ts)) for ts in rq.transfer_syntaxes]
            parts.append(_item(ITEM_CONTEXT_RQ, bytes((rq.id, 0, 0, 0)) + b"".join(syntaxes)))
    else:
        pdu_type = ASSOCIATE_AC
        for ac in pdu.contexts:
            ts = _item(ITEM_TRANSFER_SYNTAX, _ascii(ac.transfer_syntax))
            parts.append(_item(ITEM_CONTEXT_AC, bytes((ac.id, 0, ac.result, 0)) + ts))
    parts.append(_encode_user(pdu.user))
    body = b"".join(parts)
    return _HEADER.pack(pdu_type, len(body)) + body


def encode(pdu: PDU) -> bytes:
    """The bytes of a PDU, its 6-byte header included (PS3.8 9.3).

    Raises:
        ValueError: a value that does not fit its field (an AE title over 16 characters,
            an item over 65535 bytes, a number out of its field's range, non-ASCII text).
    """
    try:
        return _encode(pdu)
    except struct.error as error:
        raise ValueError(f"{type(pdu).__name__}: {error}") from error


def _encode(pdu: PDU) -> bytes:
    if isinstance(pdu, AssociateRQ | AssociateAC):
        return _encode_associate(pdu)
    if isinstance(pdu, PDataTF):
        body = b"".join(
            pdv_header(p.context_id, p.is_command, p.is_last, len(p.data)) + bytes(p.data)
            for p in pdu.pdvs
        )
        return _HEADER.pack(P_DATA_TF, len(body)) + body
    if isinstance(pdu, AssociateRJ):
        return _HEADER.pack(ASSOCIATE_RJ, 4) + bytes((0, pdu.result, pdu.source, pdu.reason))
    if isinstance(pdu, Abort):
        return _HEADER.pack(ABORT, 4) + bytes((0, 0, pdu.source, pdu.reason))
    if isinstance(pdu, ReleaseRQ):
        return _HEADER.pack(RELEASE_RQ, 4) + _RELEASE_BODY
    return _HEADER.pack(RELEASE_RP, 4) + _RELEASE_BODY


# ---------------------------------------------------------------- decoding


def _items(data: bytes, pos: int, end: int, parent: str) -> Iterator[tuple[int, int, int]]:
    """(item type, value start, value stop) of the items in data[pos:end], each inside it."""
    while pos < end:
        if end - pos < 4:
            raise PduError(f"{parent}: an item header is cut short")
        item_type, length = _ITEM.unpack_from(data, pos)
        start = pos + 4
        pos = start + length
        if pos > end:
            raise PduError(f"{parent}: item {item_type:#04x} of {length} bytes runs past its end")
        yield item_type, start, pos


@lru_cache(maxsize=1024)
def _uid_text(raw: bytes) -> str | None:
    # Some peers pad a UID with a NUL to an even length, as in a data set: tolerated.
    text = raw.decode("latin-1").rstrip("\x00")
    return text if is_acceptable_uid(text) else None  # 1..64 characters (PS3.5 6.2 VR UI)


def _uid(data: bytes, start: int, stop: int, what: str) -> str:
    # The same few UIDs come again and again (transfer syntaxes): checked once each.
    text = _uid_text(data[start:stop]) if stop - start <= _UID_FIELD_LENGTH else None
    if text is None:
        raise PduError(f"{what} is not a UID: {data[start:stop][:80]!r}")
    return text


def _ae(data: bytes, start: int, what: str) -> str:
    # Leading and trailing spaces are not significant (PS3.8 9.3.2, PS3.5 6.2 VR AE).
    text = data[start : start + AE_LENGTH].decode("latin-1").strip(" ")
    if _AE.fullmatch(text) is None:
        raise PduError(f"{what} is not an AE title: {text!r}")
    return text


def _lv_field(data: bytes, pos: int, stop: int, what: str) -> tuple[int, int]:
    """The (start, stop) of a 2-byte-length-prefixed field at ``pos``, inside ``stop``."""
    if stop - pos < 2:
        raise PduError(f"{what}: its length field is cut short")
    (length,) = _U16.unpack_from(data, pos)
    end = pos + 2 + length
    if end > stop:
        raise PduError(f"{what}: a length of {length} runs past its sub-item")
    return pos + 2, end


def _max_length(data: bytes, start: int, stop: int) -> int:
    if stop - start != 4:
        raise PduError("maximum length sub-item is not 4 bytes")  # PS3.8 D.1.1
    value: int = struct.unpack_from(">I", data, start)[0]
    return value


def _implementation_uid(data: bytes, start: int, stop: int) -> str:
    return _uid(data, start, stop, "implementation class UID")


def _async_ops(data: bytes, start: int, stop: int) -> tuple[int, int]:
    if stop - start != 4:
        raise PduError("asynchronous operations window sub-item is not 4 bytes")  # PS3.7 D.3.3.3
    invoked, performed = struct.unpack_from(">HH", data, start)
    return invoked, performed


def _version_name(data: bytes, start: int, stop: int) -> str:
    if stop - start > VERSION_NAME_LENGTH:
        raise PduError("implementation version name exceeds 16 characters")  # PS3.7 D.3.3.2.3
    return data[start:stop].decode("latin-1").strip(" ")


def _role(data: bytes, start: int, stop: int) -> RoleSelection:
    uid_start, uid_stop = _lv_field(data, start, stop, "role selection")
    if stop - uid_stop != 2:
        raise PduError("role selection sub-item: SCU and SCP roles are not 2 bytes")
    scu, scp = data[uid_stop], data[uid_stop + 1]
    if scu > 1 or scp > 1:  # 0 non-support, 1 support (PS3.7 Table D.3-9)
        raise PduError(f"role selection values {scu}/{scp} are not 0 or 1")
    return RoleSelection(
        _uid(data, uid_start, uid_stop, "role selection SOP class"), scu == 1, scp == 1
    )


def _extended(data: bytes, start: int, stop: int) -> ExtendedNegotiation:
    uid_start, uid_stop = _lv_field(data, start, stop, "extended negotiation")
    sop_class = _uid(data, uid_start, uid_stop, "extended negotiation SOP class")
    return ExtendedNegotiation(sop_class, data[uid_stop:stop])


def _common_extended(data: bytes, start: int, stop: int) -> CommonExtendedNegotiation:
    what = "common extended negotiation"
    sop_start, sop_stop = _lv_field(data, start, stop, what)
    svc_start, svc_stop = _lv_field(data, sop_stop, stop, what)
    rel_start, rel_stop = _lv_field(data, svc_stop, stop, what)
    related = []
    pos = rel_start
    while pos < rel_stop:
        uid_start, pos = _lv_field(data, pos, rel_stop, what)
        related.append(_uid(data, uid_start, pos, "related general SOP class"))
    return CommonExtendedNegotiation(
        _uid(data, sop_start, sop_stop, f"{what} SOP class"),
        _uid(data, svc_start, svc_stop, f"{what} service class"),
        tuple(related),
    )


def _identity_rq(data: bytes, start: int, stop: int) -> UserIdentityRQ:
    if stop - start < 2:
        raise PduError("user identity sub-item cut short")
    p_start, p_stop = _lv_field(data, start + 2, stop, "user identity primary field")
    s_start, s_stop = _lv_field(data, p_stop, stop, "user identity secondary field")
    return UserIdentityRQ(
        data[start], data[start + 1] == 1, data[p_start:p_stop], data[s_start:s_stop]
    )


def _identity_ac(data: bytes, start: int, stop: int) -> UserIdentityAC:
    r_start, r_stop = _lv_field(data, start, stop, "user identity server response")
    return UserIdentityAC(data[r_start:r_stop])


# Sub-items present at most once, and those that may repeat (PS3.7 D.3.3).
_SINGLE_SUB_ITEMS = {
    SUB_MAX_LENGTH: ("max_length", _max_length),
    SUB_IMPLEMENTATION_CLASS_UID: ("implementation_class_uid", _implementation_uid),
    SUB_ASYNC_OPS: ("async_ops", _async_ops),
    SUB_IMPLEMENTATION_VERSION_NAME: ("implementation_version_name", _version_name),
    SUB_USER_IDENTITY_RQ: ("identity_rq", _identity_rq),
    SUB_USER_IDENTITY_AC: ("identity_ac", _identity_ac),
}
_REPEATED_SUB_ITEMS = {
    SUB_ROLE_SELECTION: ("roles", _role),
    SUB_EXTENDED_NEGOTIATION: ("extended", _extended),
    SUB_COMMON_EXTENDED_NEGOTIATION: ("common_extended", _common_extended),
}


def _decode_user(data: bytes, start: int, stop: int) -> UserInformation:
    single: dict[str, object] = {}
    repeated: dict[str, list[object]] = {"roles": [], "extended": [], "common_extended": []}
    for sub_type, s_start, s_stop in _items(data, start, stop, "user information"):
        if sub_type in _SINGLE_SUB_ITEMS:
            name, parse = _SINGLE_SUB_ITEMS[sub_type]
            if name in single:
                raise PduError(f"two {name} sub-items", ABORT_UNEXPECTED_PARAMETER)
            single[name] = parse(data, s_start, s_stop)
        elif sub_type in _REPEATED_SUB_ITEMS:
            name, parse_one = _REPEATED_SUB_ITEMS[sub_type]
            repeated[name].append(parse_one(data, s_start, s_stop))
        # Any other sub-item is ignored: acceptors of an earlier edition must not reject an
        # association for a sub-item they do not know (PS3.8 D.2 note 2).
    fields = dict(single, **{name: tuple(values) for name, values in repeated.items()})
    return UserInformation(**fields)  # type: ignore[arg-type]


def _context_rq(data: bytes, start: int, stop: int) -> PresentationContextRQ:
    if stop - start < 4:
        raise PduError("presentation context item cut short")
    abstract: str | None = None
    syntaxes: list[str] = []
    for sub_type, s_start, s_stop in _items(data, start + 4, stop, "presentation context"):
        if sub_type == ITEM_TRANSFER_SYNTAX:
            syntaxes.append(_uid(data, s_start, s_stop, "transfer syntax"))
        elif sub_type == ITEM_ABSTRACT_SYNTAX and abstract is None:
            abstract = _uid(data, s_start, s_stop, "abstract syntax")
        elif sub_type == ITEM_ABSTRACT_SYNTAX:
            raise PduError("two abstract syntaxes in one context", ABORT_UNEXPECTED_PARAMETER)
        else:
            raise PduError(f"unknown sub-item {sub_type:#04x}", ABORT_UNRECOGNIZED_PARAMETER)
    # One abstract syntax and one or more transfer syntaxes (PS3.8 9.3.2.2).
    if abstract is None or not syntaxes:
        raise PduError(f"presentation context {data[start]} lacks its syntaxes")
    return PresentationContextRQ(data[start], abstract, tuple(syntaxes))


def _context_ac(data: bytes, start: int, stop: int) -> PresentationContextAC:
    if stop - start < 4:
        raise PduError("presentation context item cut short")
    context_id, result = data[start], data[start + 2]
    if result > PC_TRANSFER_SYNTAXES_NOT_SUPPORTED:
        raise PduError(f"presentation context result {result} is not defined")
    syntax: str | None = None
    for sub_type, s_start, s_stop in _items(data, start + 4, stop, "presentation context"):
        if sub_type != ITEM_TRANSFER_SYNTAX:
            raise PduError(f"unknown sub-item {sub_type:#04x}", ABORT_UNRECOGNIZED_PARAMETER)
        if syntax is not None:
            raise PduError("two transfer syntaxes in one answer", ABORT_UNEXPECTED_PARAMETER)
        if result == PC_ACCEPTANCE:
            syntax = _uid(data, s_start, s_stop, "transfer syntax")
        else:  # not significant and not tested unless accepted (PS3.8 Table 9-18)
            text = data[s_start:s_stop].decode("latin-1").rstrip("\x00")
            syntax = text if is_acceptable_uid(text) else ""
    if syntax is None and result == PC_ACCEPTANCE:
        raise PduError(f"accepted presentation context {context_id} lacks its transfer syntax")
    return PresentationContextAC(context_id, result, syntax or "")


def _check_contexts(contexts: list[PresentationContextRQ] | list[PresentationContextAC]) -> None:
    if len(contexts) > MAX_CONTEXTS:
        raise PduError(f"{len(contexts)} presentation contexts, at most 128")
    seen: set[int] = set()
    for context in contexts:
        # Odd integers 1..255, unique within the association (PS3.8 9.3.2.2).
        if context.id % 2 == 0 or context.id in seen:
            raise PduError(f"presentation context id {context.id} is even or repeated")
        seen.add(context.id)


_ASSOCIATE_ITEMS = (
    ITEM_APPLICATION_CONTEXT,
    ITEM_CONTEXT_RQ,
    ITEM_CONTEXT_AC,
    ITEM_USER_INFORMATION,
)


def _decode_associate(pdu_type: int, data: bytes) -> AssociateRQ | AssociateAC:
    if len(data) < _FIXED_ASSOCIATE:
        raise PduError(f"A-ASSOCIATE of {len(data)} bytes, fewer than {_FIXED_ASSOCIATE}")
    (version,) = _U16.unpack_from(data, 0)
    is_rq = pdu_type == ASSOCIATE_RQ
    context_type = ITEM_CONTEXT_RQ if is_rq else ITEM_CONTEXT_AC
    application: str | None = None
    user: UserInformation | None = None
    contexts_rq: list[PresentationContextRQ] = []
    contexts_ac: list[PresentationContextAC] = []
    for item_type, start, stop in _items(data, _FIXED_ASSOCIATE, len(data), "A-ASSOCIATE"):
        if item_type == context_type and is_rq:
            contexts_rq.append(_context_rq(data, start, stop))
        elif item_type == context_type:
            contexts_ac.append(_context_ac(data, start, stop))
        elif item_type == ITEM_APPLICATION_CONTEXT and application is None:
            application = _uid(data, start, stop, "application context name")
        elif item_type == ITEM_USER_INFORMATION and user is None:
            user = _decode_user(data, start, stop)
        elif item_type in _ASSOCIATE_ITEMS:  # a second one, or the other side's context item
            raise PduError(f"unexpected item {item_type:#04x}", ABORT_UNEXPECTED_PARAMETER)
        else:
            raise PduError(f"unknown item {item_type:#04x}", ABORT_UNRECOGNIZED_PARAMETER)
    if application is None:
        raise PduError("A-ASSOCIATE without an application context")  # PS3.8 9.3.2
    user = user or UserInformation()
    if is_rq:
        # No context at all is well formed: the acceptor answers it with A-ASSOCIATE-RJ.
        _check_contexts(contexts_rq)
        called, calling = _ae(data, 4, "called AE title"), _ae(data, 20, "calling AE title")
        return AssociateRQ(called, calling, tuple(contexts_rq), user, application, version)
    _check_contexts(contexts_ac)
    # In an A-ASSOCIATE-AC the AE titles are echoed and not tested (PS3.8 Table 9-17).
    called = data[4:20].decode("latin-1").strip(" \x00")
    calling = data[20:36].decode("latin-1").strip(" \x00")
    return AssociateAC(called, calling, tuple(contexts_ac), user, application, version)


def decode(pdu_type: int, body: bytes | bytearray | memoryview) -> PDU:
    """The PDU of this type whose variable field (after the 6-byte header) is ``body``.

    A P-DATA-TF's PDV data are views of ``body``; everything else is copied out.

    Raises:
        PduError: an unknown type or anything malformed, with the A-ABORT reason to send.
    """
    if pdu_type == P_DATA_TF:
        return PDataTF(tuple(iter_pdvs(body)))
    if pdu_type in (ASSOCIATE_RQ, ASSOCIATE_AC):
        return _decode_associate(pdu_type, bytes(body))
    if not ASSOCIATE_RJ <= pdu_type <= ABORT:
        raise PduError(f"unknown PDU type {pdu_type:#04x}", ABORT_UNRECOGNIZED_PDU)
    if len(body) != 4:  # PS3.8 Tables 9-21, 9-24, 9-25, 9-26
        raise PduError(f"PDU type {pdu_type:#04x} of {len(body)} bytes, not 4")
    if pdu_type == ASSOCIATE_RJ:
        return AssociateRJ(body[1], body[2], body[3])
    if pdu_type == ABORT:
        return Abort(body[2], body[3])
    return ReleaseRQ() if pdu_type == RELEASE_RQ else ReleaseRP()
