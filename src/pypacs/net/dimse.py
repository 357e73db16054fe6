"""DIMSE command sets as bytes (PS3.7 9, 10, Annex E): the codec and one builder per message.

A command set is a small implicit VR little endian data set of group 0000 (PS3.7 6.3.1) with
a fixed dictionary (Table E.1-1): ``encode_command``/``decode_command`` handle it as a layout,
never through pydicom. Framing into P-DATA-TF PDUs and reassembly live in ``net/pdata.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Any, Final, NamedTuple

from pypacs.errors import PypacsError
from pypacs.model.status import Status


class DimseError(PypacsError):
    """A command set or a sequence of PDVs breaks PS3.7 / PS3.8; the association aborts."""


# Command Field values (PS3.7 E.1-1, 9.3, 10.3).
C_STORE_RQ: Final = 0x0001
C_STORE_RSP: Final = 0x8001
C_GET_RQ: Final = 0x0010
C_GET_RSP: Final = 0x8010
C_FIND_RQ: Final = 0x0020
C_FIND_RSP: Final = 0x8020
C_MOVE_RQ: Final = 0x0021
C_MOVE_RSP: Final = 0x8021
C_ECHO_RQ: Final = 0x0030
C_ECHO_RSP: Final = 0x8030
C_CANCEL_RQ: Final = 0x0FFF
N_EVENT_REPORT_RQ: Final = 0x0100
N_EVENT_REPORT_RSP: Final = 0x8100
N_GET_RQ: Final = 0x0110
N_GET_RSP: Final = 0x8110
N_SET_RQ: Final = 0x0120
N_SET_RSP: Final = 0x8120
N_ACTION_RQ: Final = 0x0130
N_ACTION_RSP: Final = 0x8130
N_CREATE_RQ: Final = 0x0140
N_CREATE_RSP: Final = 0x8140
N_DELETE_RQ: Final = 0x0150
N_DELETE_RSP: Final = 0x8150

# Command Data Set Type (PS3.7 E.1-1): 0x0101 means none; any other value means one follows.
DATA_SET_ABSENT: Final = 0x0101
DATA_SET_PRESENT: Final = 0x0001

# Priority (PS3.7 E.1-1).
PRIORITY_MEDIUM: Final = 0x0000
PRIORITY_HIGH: Final = 0x0001
PRIORITY_LOW: Final = 0x0002

VERIFICATION_SOP_CLASS: Final = "1.2.840.10008.1.1"  # PS3.4 A.4
MAX_COMMAND_BYTES: Final = 64 * 1024  # our bound on one command set, fragments together
MAX_COUNT: Final = 0xFFFF  # sub-operation counts are US (PS3.7 E.1-1)
_AE_LENGTH: Final = 16  # PS3.5 6.2
_LO_LENGTH: Final = 64  # PS3.5 6.2

_ELEMENT = struct.Struct("<HHI")  # implicit VR LE: group, element, value length (PS3.5 7.1.3)
_US = struct.Struct("<H")
_US_ELEMENT = struct.Struct("<HHIH")  # a whole US element
_UL = struct.Struct("<I")


class Command(NamedTuple):
    """A command set; ``None`` (or an empty tuple) where an element is absent.

    A named tuple rather than a frozen dataclass: it is built once per message, and building
    23 frozen fields costs three times as much.
    """

    command_field: int
    data_set_type: int = DATA_SET_ABSENT
    affected_sop_class_uid: str | None = None
    requested_sop_class_uid: str | None = None
    message_id: int | None = None
    message_id_being_responded_to: int | None = None
    move_destination: str | None = None
    priority: int | None = None
    status: int | None = None
    offending_elements: tuple[int, ...] = ()
    error_comment: str | None = None
    error_id: int | None = None
    affected_sop_instance_uid: str | None = None
    requested_sop_instance_uid: str | None = None
    event_type_id: int | None = None
    attribute_identifiers: tuple[int, ...] = ()
    action_type_id: int | None = None
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    move_originator_ae: str | None = None
    move_originator_message_id: int | None = None

    @property
    def has_dataset(self) -> bool:
        """True when a data set follows this command (PS3.7 E.1-1)."""
        return self.data_set_type != DATA_SET_ABSENT

    @property
    def is_response(self) -> bool:
        """True for a response (the high bit of the Command Field)."""
        return bool(self.command_field & 0x8000)


# ---------------------------------------------------------------- value codecs


def _pad(raw: bytes, pad: bytes) -> bytes:
    return raw + pad if len(raw) % 2 else raw


def _enc_us(value: Any) -> bytes:
    return _US.pack(value)


def _enc_ui(value: Any) -> bytes:
    return _pad(str(value).encode("ascii"), b"\0")  # PS3.5 9.1: UIDs padded with NUL


def _enc_ae(value: Any) -> bytes:
    return _pad(str(value)[:_AE_LENGTH].encode("ascii", "replace"), b" ")


def _enc_lo(value: Any) -> bytes:
    return _pad(str(value)[:_LO_LENGTH].encode("ascii", "replace"), b" ")


def _enc_at(value: Any) -> bytes:
    return b"".join(_US.pack(tag >> 16) + _US.pack(tag & 0xFFFF) for tag in value)


def _dec_us(raw: bytes, elem: int) -> int:
    if len(raw) != 2:
        raise DimseError(f"(0000,{elem:04X}) is US but has {len(raw)} bytes")
    return raw[0] | raw[1] << 8


def _dec_text(raw: bytes, elem: int) -> str:
    # Command sets use the default repertoire; latin-1 reads any byte, the service judges it.
    return raw.decode("latin-1").strip(" \0")


def _dec_ui(raw: bytes, elem: int) -> str:
    # PS3.5 6.2: a UID is digits and periods. Which ones make a valid UID the service judges;
    # bytes outside ASCII make no UID at all, and could not be echoed in a response.
    if not raw.isascii():
        raise DimseError(f"(0000,{elem:04X}) is UI but holds bytes outside ASCII")
    return raw.decode("ascii").strip(" \0")


def _dec_at(raw: bytes, elem: int) -> tuple[int, ...]:
    if len(raw) % 4:
        raise DimseError(f"(0000,{elem:04X}) is AT but has {len(raw)} bytes")
    words = struct.unpack(f"<{len(raw) // 2}H", raw)
    return tuple(words[i] << 16 | words[i + 1] for i in range(0, len(words), 2))


_Encoder = Callable[[Any], bytes]
_Decoder = Callable[[bytes, int], Any]
_US_CODEC: tuple[_Encoder, _Decoder] = (_enc_us, _dec_us)
_UI_CODEC: tuple[_Encoder, _Decoder] = (_enc_ui, _dec_ui)
_AE_CODEC: tuple[_Encoder, _Decoder] = (_enc_ae, _dec_text)
_LO_CODEC: tuple[_Encoder, _Decoder] = (_enc_lo, _dec_text)
_AT_CODEC: tuple[_Encoder, _Decoder] = (_enc_at, _dec_at)

# PS3.7 Table E.1-1, in tag order: element number, Command attribute, (encoder, decoder).
_TABLE: Final[tuple[tuple[int, str, tuple[_Encoder, _Decoder]], ...]] = (
    (0x0002, "affected_sop_class_uid", _UI_CODEC),
    (0x0003, "requested_sop_class_uid", _UI_CODEC),
    (0x0100, "command_field", _US_CODEC),
    (0x0110, "message_id", _US_CODEC),
    (0x0120, "message_id_being_responded_to", _US_CODEC),
    (0x0600, "move_destination", _AE_CODEC),
    (0x0700, "priority", _US_CODEC),
    (0x0800, "data_set_type", _US_CODEC),
    (0x0900, "status", _US_CODEC),
    (0x0901, "offending_elements", _AT_CODEC),
    (0x0902, "error_comment", _LO_CODEC),
    (0x0903, "error_id", _US_CODEC),
    (0x1000, "affected_sop_instance_uid", _UI_CODEC),
    (0x1001, "requested_sop_instance_uid", _UI_CODEC),
    (0x1002, "event_type_id", _US_CODEC),
    (0x1005, "attribute_identifiers", _AT_CODEC),
    (0x1008, "action_type_id", _US_CODEC),
    (0x1020, "remaining", _US_CODEC),
    (0x1021, "completed", _US_CODEC),
    (0x1022, "failed", _US_CODEC),
    (0x1023, "warning", _US_CODEC),
    (0x1030, "move_originator_ae", _AE_CODEC),
    (0x1031, "move_originator_message_id", _US_CODEC),
)
_INDEX: Final = {name: index for index, name in enumerate(Command._fields)}
_ENCODERS: Final = tuple((elem, _INDEX[name], codec[0]) for elem, name, codec in _TABLE)
_DECODERS: Final = {elem: (_INDEX[name], codec[1]) for elem, name, codec in _TABLE}
# What decoding starts from: every element absent, Command Data Set Type included.
_ABSENT: Final = tuple(() if isinstance(d, tuple) else None for d in Command(0))

# PS3.7 Table E.2-1: retired command elements an old peer may still send; read past, unused.
_RETIRED: Final = frozenset(
    (0x0001, 0x0010, 0x0200, 0x0300, 0x0400, 0x0850, 0x0860, 0x4000, 0x4010, 0x5010, 0x5020)
).union((0x5110, 0x5120, 0x5130, 0x5140, 0x5150, 0x5160, 0x5170, 0x5180, 0x5190, 0x51A0, 0x51B0))

# The mandatory elements of each message besides Command Field and Command Data Set Type
# (PS3.7 9.3.1-9.3.5 and 10.3 request/response tables, "M" rows). A UID that is present but
# empty is left for the service to refuse with a status.
_RQ: Final = ("message_id",)
_RSP: Final = ("message_id_being_responded_to",)
_QUERY_RQ: Final = ("message_id", "affected_sop_class_uid", "priority")
_REQUIRED: Final[dict[int, tuple[str, ...]]] = {
    C_STORE_RQ: (*_QUERY_RQ, "affected_sop_instance_uid"),
    C_STORE_RSP: (*_RSP, "status"),
    C_GET_RQ: _QUERY_RQ,
    C_GET_RSP: (*_RSP, "status"),
    C_FIND_RQ: _QUERY_RQ,
    C_FIND_RSP: (*_RSP, "status"),
    C_MOVE_RQ: (*_QUERY_RQ, "move_destination"),
    C_MOVE_RSP: (*_RSP, "status"),
    C_ECHO_RQ: ("message_id", "affected_sop_class_uid"),
    C_ECHO_RSP: (*_RSP, "status"),
    C_CANCEL_RQ: _RSP,
    # N-services are not served, but decode so that the service can answer them with a status.
    N_EVENT_REPORT_RQ: _RQ,
    N_EVENT_REPORT_RSP: _RSP,
    N_GET_RQ: _RQ,
    N_GET_RSP: _RSP,
    N_SET_RQ: _RQ,
    N_SET_RSP: _RSP,
    N_ACTION_RQ: _RQ,
    N_ACTION_RSP: _RSP,
    N_CREATE_RQ: _RQ,
    N_CREATE_RSP: _RSP,
    N_DELETE_RQ: _RQ,
    N_DELETE_RSP: _RSP,
}
_REQUIRED_AT: Final = {
    field: tuple((name, _INDEX[name]) for name in ("data_set_type", *names))
    for field, names in _REQUIRED.items()
}
_GROUP_LENGTH_HEADER: Final = _ELEMENT.pack(0, 0, 4)


# ---------------------------------------------------------------- command sets


def encode_command(command: Command) -> bytes:
    """The command set as implicit VR little endian, group length first (PS3.7 6.3.1, E.1)."""
    parts: list[bytes] = []
    header = _ELEMENT.pack
    us_element = _US_ELEMENT.pack
    for elem, index, encode in _ENCODERS:
        value = command[index]
        if value is None or value == ():
            continue
        if encode is _enc_us:  # most elements: header and value in one pack
            parts.append(us_element(0, elem, 2, value))
            continue
        raw = encode(value)
        parts.append(header(0, elem, len(raw)))
        parts.append(raw)
    body = b"".join(parts)
    return _GROUP_LENGTH_HEADER + _UL.pack(len(body)) + body


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Read a command set (PS3.7 6.3.1, Table E.1-1).

    Raises:
        DimseError: not group 0000, a wrong group length, an unknown, duplicate or unordered
            element, a length past the end, a mandatory element missing, over 64 KiB.
    """
    raw = _framed(data)
    end = len(raw)
    values: list[Any] = list(_ABSENT)
    unpack = _ELEMENT.unpack_from
    decoders = _DECODERS
    pos = 12
    previous = 0
    while pos < end:
        if end - pos < 8:
            raise DimseError("command set ends inside an element header")
        group, elem, length = unpack(raw, pos)
        pos += 8
        if group != 0:
            raise DimseError(f"element ({group:04X},{elem:04X}) is not of the command group")
        if elem <= previous:  # PS3.5 7.1: ascending order, each element once
            raise DimseError(f"element (0000,{elem:04X}) repeated or out of order")
        previous = elem
        stop = pos + length
        if stop > end:
            raise DimseError(f"element (0000,{elem:04X}) of {length} bytes runs past the end")
        spec = decoders.get(elem)
        if spec is None:
            if elem not in _RETIRED:
                raise DimseError(f"unknown command element (0000,{elem:04X})")
        elif spec[1] is _dec_us:  # most elements: read inline, no call
            if length != 2:
                raise DimseError(f"(0000,{elem:04X}) is US but has {length} bytes")
            values[spec[0]] = raw[pos] | raw[pos + 1] << 8
        else:
            values[spec[0]] = spec[1](raw[pos:stop], elem)
        pos = stop
    return _checked(values)


def _framed(data: bytes | bytearray | memoryview) -> bytes:
    if len(data) > MAX_COMMAND_BYTES:
        raise DimseError(f"command set of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}")
    raw = data if isinstance(data, bytes) else bytes(data)
    # PS3.7 E.1-1: Command Group Length (UL) is mandatory; it counts the bytes after it.
    if len(raw) < 12 or raw[:8] != _GROUP_LENGTH_HEADER:
        raise DimseError("a command set must begin with its Command Group Length")
    (group_length,) = _UL.unpack_from(raw, 8)
    if group_length != len(raw) - 12:
        raise DimseError(f"Command Group Length {group_length}, but {len(raw) - 12} bytes follow")
    return raw


def _checked(values: list[Any]) -> Command:
    field = values[_INDEX["command_field"]]
    if field is None:
        raise DimseError("command set without a Command Field")
    required = _REQUIRED_AT.get(field)
    if required is None:
        raise DimseError(f"unknown Command Field {field:#06x}")
    missing = [name for name, index in required if values[index] is None]
    if missing:
        raise DimseError(f"command {field:#06x} lacks {', '.join(missing)}")
    return Command._make(values)


# ---------------------------------------------------------------- builders


def _data_set_type(present: bool) -> int:
    return DATA_SET_PRESENT if present else DATA_SET_ABSENT


def _count(value: int | None) -> int | None:
    # A US cannot say more than 65535; a larger retrieve still reports its best bound.
    return None if value is None else min(max(value, 0), MAX_COUNT)


def echo_rq(message_id: int, sop_class: str = VERIFICATION_SOP_CLASS) -> bytes:
    """C-ECHO-RQ (PS3.7 9.3.5.1)."""
    return encode_command(Command(C_ECHO_RQ, DATA_SET_ABSENT, sop_class, message_id=message_id))


def echo_rsp(
    message_id: int,
    status: int = Status.SUCCESS,
    *,
    sop_class: str = VERIFICATION_SOP_CLASS,
    error_comment: str | None = None,
) -> bytes:
    """C-ECHO-RSP (PS3.7 9.3.5.2)."""
    return encode_command(
        Command(
            C_ECHO_RSP,
            DATA_SET_ABSENT,
            sop_class,
            message_id_being_responded_to=message_id,
            status=status,
            error_comment=error_comment,
        )
    )


def store_rq(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    *,
    priority: int = PRIORITY_MEDIUM,
    move_originator_ae: str | None = None,
    move_originator_message_id: int | None = None,
) -> bytes:
    """C-STORE-RQ (PS3.7 9.3.1.1); the originator fields when sent for a C-MOVE."""
    return encode_command(
        Command(
            C_STORE_RQ,
            DATA_SET_PRESENT,
            sop_class,
            message_id=message_id,
            priority=priority,
            affected_sop_instance_uid=sop_instance,
            move_originator_ae=move_originator_ae,
            move_originator_message_id=move_originator_message_id,
        )
    )


def store_rsp(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    status: int,
    *,
    error_comment: str | None = None,
    offending_elements: tuple[int, ...] = (),
    error_id: int | None = None,
) -> bytes:
    """C-STORE-RSP (PS3.7 9.3.1.2), with the failure details of PS3.7 C.4 when given."""
    return encode_command(
        Command(
            C_STORE_RSP,
            DATA_SET_ABSENT,
            sop_class,
            message_id_being_responded_to=message_id,
            status=status,
            offending_elements=offending_elements,
            error_comment=error_comment,
            error_id=error_id,
            affected_sop_instance_uid=sop_instance,
        )
    )


def _query_rq(
    field: int, message_id: int, sop_class: str, priority: int, destination: str | None = None
) -> bytes:
    return encode_command(
        Command(
            field,
            DATA_SET_PRESENT,
            sop_class,
            message_id=message_id,
            priority=priority,
            move_destination=destination,
        )
    )


def find_rq(message_id: int, sop_class: str, *, priority: int = PRIORITY_MEDIUM) -> bytes:
    """C-FIND-RQ (PS3.7 9.3.2.1); the identifier follows as its data set."""
    return _query_rq(C_FIND_RQ, message_id, sop_class, priority)


def get_rq(message_id: int, sop_class: str, *, priority: int = PRIORITY_MEDIUM) -> bytes:
    """C-GET-RQ (PS3.7 9.3.3.1); the identifier follows as its data set."""
    return _query_rq(C_GET_RQ, message_id, sop_class, priority)


def move_rq(
    message_id: int, sop_class: str, destination: str, *, priority: int = PRIORITY_MEDIUM
) -> bytes:
    """C-MOVE-RQ (PS3.7 9.3.4.1) to the AE title ``destination``."""
    return _query_rq(C_MOVE_RQ, message_id, sop_class, priority, destination)


def cancel_rq(message_id: int) -> bytes:
    """C-CANCEL-RQ (PS3.7 9.3.2.3) for the request ``message_id``."""
    return encode_command(
        Command(C_CANCEL_RQ, DATA_SET_ABSENT, message_id_being_responded_to=message_id)
    )


_find_rsp_cache: dict[tuple[str, int, bool], tuple[bytes, bytes]] = {}


def find_rsp(
    message_id: int,
    sop_class: str,
    status: int,
    *,
    has_dataset: bool = False,
    error_comment: str | None = None,
    offending_elements: tuple[int, ...] = (),
    error_id: int | None = None,
) -> bytes:
    """C-FIND-RSP (PS3.7 9.3.2.2); ``has_dataset`` for a pending response's identifier."""
    if error_comment is None and not offending_elements and error_id is None:
        # The per-match path: one encoding per (SOP class, status), the message id patched in.
        key = (sop_class, status, has_dataset)
        halves = _find_rsp_cache.get(key)
        if halves is None:
            whole = _response(C_FIND_RSP, 0, sop_class, status, has_dataset)
            # Group length, (0000,0002), (0000,0100) precede the value of (0000,0120).
            at = 12 + 8 + len(_enc_ui(sop_class)) + 8 + 2 + 8
            halves = (whole[:at], whole[at + 2 :])
            if len(_find_rsp_cache) < 64:
                _find_rsp_cache[key] = halves
        return halves[0] + _US.pack(message_id) + halves[1]
    return _response(
        C_FIND_RSP,
        message_id,
        sop_class,
        status,
        has_dataset,
        error_comment=error_comment,
        offending_elements=offending_elements,
        error_id=error_id,
    )


def retrieve_rsp(
    field: int,
    message_id: int,
    sop_class: str,
    status: int,
    *,
    remaining: int | None = None,
    completed: int | None = None,
    failed: int | None = None,
    warning: int | None = None,
    has_dataset: bool = False,
    error_comment: str | None = None,
    offending_elements: tuple[int, ...] = (),
    error_id: int | None = None,
) -> bytes:
    """C-GET-RSP (PS3.7 9.3.3.2) or C-MOVE-RSP (9.3.4.2), by ``field``, with its sub-operation
    counts (clamped to 65535)."""
    return _response(
        field,
        message_id,
        sop_class,
        status,
        has_dataset,
        (remaining, completed, failed, warning),
        error_comment=error_comment,
        offending_elements=offending_elements,
        error_id=error_id,
    )


get_rsp = partial(retrieve_rsp, C_GET_RSP)
move_rsp = partial(retrieve_rsp, C_MOVE_RSP)


def _response(
    field: int,
    message_id: int,
    sop_class: str,
    status: int,
    has_dataset: bool,
    counts: tuple[int | None, int | None, int | None, int | None] = (None, None, None, None),
    *,
    error_comment: str | None = None,
    offending_elements: tuple[int, ...] = (),
    error_id: int | None = None,
) -> bytes:
    return encode_command(
        Command(
            field,
            _data_set_type(has_dataset),
            sop_class,
            message_id_being_responded_to=message_id,
            status=status,
            offending_elements=offending_elements,
            error_comment=error_comment,
            error_id=error_id,
            remaining=_count(counts[0]),
            completed=_count(counts[1]),
            failed=_count(counts[2]),
            warning=_count(counts[3]),
        )
    )
