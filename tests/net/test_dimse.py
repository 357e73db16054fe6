"""DIMSE command sets and P-DATA framing: what we encode pynetdicom reads to the same values,
what pynetdicom encodes we read to the same values, and every sequencing rule of PS3.8 Annex E
is enforced with DimseError, never another exception or an unbounded allocation."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from io import BytesIO
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF

from pypacs.net import dimse, pdata
from pypacs.net.dimse import Command, DimseError, decode_command, encode_command
from pypacs.net.pdata import Assembler, BufferSink, Message, fragment, pack_messages
from pypacs.net.pdu import P_DATA_TF as P_DATA_TF_TYPE
from pypacs.net.pdu import iter_pdvs, read_header

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
INSTANCE = "1.2.826.0.1.3680043.8.498.12345678901234567890123"  # odd length: padded with NUL
PENDING, SUCCESS, WARNING_SUBOPS, INVALID_ID = 0xFF00, 0x0000, 0xB000, 0xA900

# (builder output, the pydicom keywords and values pynetdicom must read from it)
BUILT: list[tuple[bytes, dict[str, Any]]] = [
    (
        dimse.echo_rq(1),
        {"CommandField": 0x0030, "MessageID": 1, "AffectedSOPClassUID": "1.2.840.10008.1.1"},
    ),
    (dimse.echo_rsp(2), {"CommandField": 0x8030, "MessageIDBeingRespondedTo": 2, "Status": 0}),
    (
        dimse.store_rq(3, CT, INSTANCE, priority=dimse.PRIORITY_HIGH),
        {"CommandField": 1, "MessageID": 3, "AffectedSOPClassUID": CT, "Priority": 1}
        | {"AffectedSOPInstanceUID": INSTANCE, "CommandDataSetType": 1},
    ),
    (
        dimse.store_rq(4, CT, INSTANCE, move_originator_ae="MOVER", move_originator_message_id=9),
        {"MoveOriginatorApplicationEntityTitle": "MOVER", "MoveOriginatorMessageID": 9},
    ),
    (
        dimse.store_rsp(
            5,
            CT,
            INSTANCE,
            INVALID_ID,
            error_comment="no SOP Instance UID",
            offending_elements=(0x00080018, 0x0020000D),
            error_id=7,
        ),
        {"CommandField": 0x8001, "Status": INVALID_ID, "ErrorComment": "no SOP Instance UID"}
        | {"OffendingElement": [0x00080018, 0x0020000D], "ErrorID": 7},
    ),
    (
        dimse.find_rq(6, FIND, priority=dimse.PRIORITY_LOW),
        {"CommandField": 0x0020, "Priority": 2, "CommandDataSetType": 1},
    ),
    (
        dimse.find_rsp(7, FIND, PENDING, has_dataset=True),
        {"CommandField": 0x8020, "MessageIDBeingRespondedTo": 7, "Status": PENDING}
        | {"CommandDataSetType": 1, "AffectedSOPClassUID": FIND},
    ),
    (dimse.find_rsp(8, FIND, SUCCESS), {"Status": 0, "CommandDataSetType": 0x0101}),
    (dimse.get_rq(9, GET), {"CommandField": 0x0010, "MessageID": 9}),
    (
        dimse.get_rsp(10, GET, PENDING, remaining=3, completed=2, failed=1, warning=0),
        {"NumberOfRemainingSuboperations": 3, "NumberOfCompletedSuboperations": 2}
        | {"NumberOfFailedSuboperations": 1, "NumberOfWarningSuboperations": 0},
    ),
    (
        dimse.move_rq(11, MOVE, "STORESCP"),
        {"CommandField": 0x0021, "MoveDestination": "STORESCP", "Priority": 0},
    ),
    (
        dimse.move_rsp(12, MOVE, WARNING_SUBOPS, completed=70000, failed=1, warning=0),
        {"NumberOfCompletedSuboperations": 0xFFFF, "Status": WARNING_SUBOPS},  # US: clamped
    ),
    (dimse.cancel_rq(13), {"CommandField": 0x0FFF, "MessageIDBeingRespondedTo": 13}),
]


@pytest.mark.parametrize(("raw", "expected"), BUILT, ids=range(len(BUILT)))
def test_pynetdicom_reads_our_command_sets(raw: bytes, expected: dict[str, Any]) -> None:
    ds = decode(BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    tags = [int(element.tag) for element in ds]
    assert tags == sorted(tags)
    for keyword, value in expected.items():
        got = ds[keyword].value
        assert (list(got) if isinstance(value, list) else got) == value, keyword
    assert encode(ds, True, True) == raw  # pydicom writes the same bytes: padding, lengths


@pytest.mark.parametrize(("raw", "expected"), BUILT, ids=range(len(BUILT)))
def test_our_decoder_round_trips_every_builder(raw: bytes, expected: dict[str, Any]) -> None:
    assert encode_command(decode_command(raw)) == raw


def _pynetdicom_bytes(message: dimse_messages.DIMSEMessage, primitive: Any) -> bytes:
    message.primitive_to_message(primitive)
    raw = encode(message.command_set, True, True)
    assert raw is not None
    return raw


def test_we_read_pynetdicom_store_rq() -> None:
    rq = dimse_primitives.C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = 17, CT, INSTANCE
    rq.Priority, rq.MoveOriginatorApplicationEntityTitle = 2, "ORIGIN"
    rq.MoveOriginatorMessageID, rq.DataSet = 4, BytesIO(b"\0\0")
    cmd = decode_command(_pynetdicom_bytes(dimse_messages.C_STORE_RQ(), rq))
    assert cmd == Command(
        dimse.C_STORE_RQ,
        dimse.DATA_SET_PRESENT,
        CT,
        message_id=17,
        priority=2,
        affected_sop_instance_uid=INSTANCE,
        move_originator_ae="ORIGIN",
        move_originator_message_id=4,
    )
    assert cmd.has_dataset and not cmd.is_response


def test_we_read_pynetdicom_responses() -> None:
    rsp = dimse_primitives.C_FIND()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = 300, FIND, INVALID_ID
    setattr(rsp, "ErrorComment", "bad key")  # noqa: B010 (its setter is typed None)
    setattr(rsp, "OffendingElement", [0x00100010])  # noqa: B010
    cmd = decode_command(_pynetdicom_bytes(dimse_messages.C_FIND_RSP(), rsp))
    assert (cmd.command_field, cmd.message_id_being_responded_to, cmd.status) == (
        dimse.C_FIND_RSP,
        300,
        INVALID_ID,
    )
    assert (cmd.error_comment, cmd.offending_elements, cmd.has_dataset) == (
        "bad key",
        (0x00100010,),
        False,
    )
    move = dimse_primitives.C_MOVE()
    move.MessageIDBeingRespondedTo, move.AffectedSOPClassUID, move.Status = 2, MOVE, PENDING
    move.NumberOfRemainingSuboperations, move.NumberOfCompletedSuboperations = 5, 6
    move.NumberOfFailedSuboperations, move.NumberOfWarningSuboperations = 7, 8
    cmd = decode_command(_pynetdicom_bytes(dimse_messages.C_MOVE_RSP(), move))
    assert (cmd.remaining, cmd.completed, cmd.failed, cmd.warning) == (5, 6, 7, 8)
    cancel = dimse_primitives.C_CANCEL()
    cancel.MessageIDBeingRespondedTo = 44
    cmd = decode_command(_pynetdicom_bytes(dimse_messages.C_CANCEL_RQ(), cancel))
    assert (cmd.command_field, cmd.message_id_being_responded_to) == (dimse.C_CANCEL_RQ, 44)


def _element(elem: int, value: bytes, group: int = 0) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def _command(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0, struct.pack("<I", len(body))) + body


_FIELD = _element(0x0100, struct.pack("<H", dimse.C_CANCEL_RQ))
_RESPONDED = _element(0x0120, b"\x01\x00")
_ABSENT = _element(0x0800, b"\x01\x01")


def test_a_retired_element_is_read_past() -> None:
    raw = _command(_element(0x0001, b"\0\0\0\0"), _FIELD, _RESPONDED, _ABSENT)
    assert decode_command(raw).message_id_being_responded_to == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_command(_FIELD, _RESPONDED, _ABSENT)[:-1], "Group Length"),
        (_FIELD + _RESPONDED + _ABSENT, "Group Length"),
        (_command(_FIELD, _RESPONDED, _ABSENT, _element(0x0010, b"\0\0", group=8)), "group"),
        (_command(_FIELD, _RESPONDED, _ABSENT, _element(0x0905, b"\0\0")), "unknown"),
        (_command(_FIELD, _RESPONDED, _RESPONDED, _ABSENT), "repeated"),
        (_command(_RESPONDED, _FIELD, _ABSENT), "out of order"),
        (
            _command(_FIELD, _RESPONDED, struct.pack("<HHI", 0, 0x0800, 100) + b"\1\1"),
            "past the end",
        ),
        (_command(_FIELD, _RESPONDED, _ABSENT, b"\0\0"), "element header"),
        (_command(_FIELD, _ABSENT), "lacks message_id_being_responded_to"),
        (_command(_FIELD, _RESPONDED), "lacks data_set_type"),
        (_command(_RESPONDED, _ABSENT), "without a Command Field"),
        (_command(_element(0x0100, b"\x99\x09"), _RESPONDED, _ABSENT), "unknown Command Field"),
        (_command(_FIELD, _element(0x0120, b"\x01"), _ABSENT), "is US"),
        (_command(_FIELD, _RESPONDED, _ABSENT, _element(0x0901, b"\0\0")), "is AT"),
        (_command(_FIELD, _RESPONDED, _ABSENT, _element(0x0902, b" " * 70000)), "exceeds"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_malformed_command_sets_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(DimseError, match=reason):
        decode_command(raw)


@pytest.mark.parametrize(
    ("builder", "lacking"),
    [
        (lambda: Command(dimse.C_STORE_RQ, 1, CT, message_id=1, priority=0), "instance"),
        (lambda: Command(dimse.C_MOVE_RQ, 1, MOVE, message_id=1, priority=0), "destination"),
        (lambda: Command(dimse.C_FIND_RQ, 1, message_id=1, priority=0), "sop_class"),
        (lambda: Command(dimse.C_ECHO_RSP, message_id_being_responded_to=1), "status"),
    ],
)
def test_mandatory_elements_per_message(builder: Any, lacking: str) -> None:
    with pytest.raises(DimseError, match=lacking):
        decode_command(encode_command(builder()))


def test_length_claiming_4_gib_allocates_nothing() -> None:
    raw = _command(_FIELD, _RESPONDED, _ABSENT)[:-10] + b"\xf0\xff\xff\xff" + b"\0" * 6
    tracemalloc.start()
    try:
        with pytest.raises(DimseError):
            decode_command(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


# ---------------------------------------------------------------- framing


def _pdus(buffers: list[bytes | memoryview]) -> list[bytes]:
    """The PDU bodies in a list of sendmsg buffers, each checked to be a P-DATA-TF."""
    stream = b"".join(bytes(b) for b in buffers)
    bodies, pos = [], 0
    while pos < len(stream):
        pdu_type, length = read_header(stream[pos : pos + 6])
        assert pdu_type == P_DATA_TF_TYPE
        bodies.append(stream[pos + 6 : pos + 6 + length])
        pos += 6 + length
    assert pos == len(stream)
    return bodies


def _reassemble(bodies: list[bytes], limit: int = 1 << 30) -> list[Message]:
    assembler = Assembler(lambda command: BufferSink(limit))
    messages = []
    for body in bodies:
        for pdv in iter_pdvs(body):
            message = assembler.feed_pdv(pdv)
            if message is not None:
                messages.append(message)
    assert not assembler.in_message
    return messages


def _dataset_of(message: Message) -> bytes:
    assert isinstance(message.dataset, BufferSink) and message.dataset.closed
    return bytes(message.dataset.data)


@pytest.mark.parametrize("max_pdu", [4096, 16382, 0])
@pytest.mark.parametrize("shape", ["0", "1", "max-7", "max-6", "max-5", "3*max"])
def test_fragment_round_trip(max_pdu: int, shape: str) -> None:
    limit = max_pdu or pdata.UNLIMITED_PDU_CAP
    size = {"0": 0, "1": 1, "max-7": limit - 7, "max-6": limit - 6, "max-5": limit - 5}.get(
        shape, 3 * limit
    )
    dataset = bytes(i % 251 for i in range(size))
    command = dimse.store_rq(1, CT, INSTANCE)
    buffers = fragment(3, command, dataset, max_pdu)
    bodies = _pdus(buffers)
    assert all(len(body) <= limit for body in bodies)
    # PS3.8 9.3.5: the command alone first, then as many PDUs as the data set needs
    data_pdus = max(1, -(-size // (limit - 6)))
    assert len(bodies) == 1 + data_pdus
    # the data set is passed on as views of the caller's buffer, never copied
    views = [b for b in buffers if isinstance(b, memoryview)]
    assert all(view.obj is dataset for view in views)
    [message] = _reassemble(bodies)
    assert (message.context_id, message.command) == (3, decode_command(command))
    assert _dataset_of(message) == dataset


def test_pynetdicom_reads_our_fragments() -> None:
    dataset = bytes(range(256)) * 100
    bodies = _pdus(fragment(5, dimse.store_rq(8, CT, INSTANCE), dataset, 4096))
    message = dimse_messages.DIMSEMessage()
    done = False
    for body in bodies:
        pdu = P_DATA_TF()
        pdu.decode(struct.pack(">BBI", 4, 0, len(body)) + body)
        done = message.decode_msg(pdu.to_primitive())
    assert done and message.context_id == 5
    assert message.command_set.AffectedSOPInstanceUID == INSTANCE
    assert isinstance(message.data_set, BytesIO) and message.data_set.getvalue() == dataset


def test_small_messages_share_pdus() -> None:
    identifiers = [Dataset() for _ in range(120)]
    for i, ident in enumerate(identifiers):
        ident.PatientID = f"P{i:04d}"
    ids = [encode(ident, True, True) or b"" for ident in identifiers]
    messages: list[tuple[bytes, bytes | None]] = [
        (dimse.find_rsp(4, FIND, PENDING, has_dataset=True), raw) for raw in ids
    ]
    messages.append((dimse.find_rsp(4, FIND, SUCCESS), None))
    bodies = _pdus(pack_messages(1, messages, 4096))
    assert all(len(body) <= 4096 for body in bodies)
    # each PDU is filled until the next PDV would not fit: none closes with room to spare
    largest_pdv = 6 + max(max(len(c), len(d or b"")) for c, d in messages)
    assert all(len(body) + largest_pdv > 4096 for body in bodies[:-1])
    assert len(bodies) == 4
    got = _reassemble(bodies)
    assert [m.command.status for m in got] == [PENDING] * 120 + [SUCCESS]
    assert [_dataset_of(m) for m in got[:-1]] == ids and got[-1].dataset is None


def test_a_data_set_larger_than_a_pdu_is_split_when_packed() -> None:
    big = bytes(10000)
    command = dimse.find_rq(1, FIND)
    bodies = _pdus(pack_messages(1, [(command, big)], 4096))
    # the command's PDU, then the data set in full PDUs of 4090-byte values and the rest
    assert [len(b) for b in bodies] == [6 + len(command), 4096, 4096, 6 + 10000 - 2 * 4090]
    assert _dataset_of(_reassemble(bodies)[0]) == big


def test_a_command_larger_than_a_pdu_is_fragmented_too() -> None:
    command = dimse.store_rq(2, CT, INSTANCE, move_originator_ae="ORIGIN")
    bodies = _pdus(fragment(7, command, b"\1\2\3", 40))
    assert all(len(body) <= 40 for body in bodies)
    assert len(bodies) == -(-len(command) // 34) + 1
    [message] = _reassemble(bodies)
    assert message.command == decode_command(command) and _dataset_of(message) == b"\1\2\3"


def test_max_pdu_without_room_for_a_value() -> None:
    with pytest.raises(ValueError, match="no room"):
        fragment(1, dimse.echo_rq(1), None, 6)


# ---------------------------------------------------------------- sequencing (PS3.8 Annex E)

ECHO = dimse.echo_rq(1)
STORE = dimse.store_rq(1, CT, INSTANCE)


@pytest.mark.parametrize(
    ("pdvs", "reason"),
    [
        ([(1, False, True, b"xx")], "without a command"),
        ([(1, True, False, STORE[:10]), (1, False, True, b"x")], "before the command"),
        ([(1, True, True, STORE), (1, True, True, ECHO)], "before the data set"),
        ([(1, True, False, STORE[:10]), (3, True, True, STORE[10:])], "context 3"),
        ([(1, True, True, STORE), (1, False, False, b"x"), (3, False, True, b"x")], "context 3"),
        ([(1, True, True, ECHO), (1, False, True, b"x")], "without a command"),
        ([(1, True, False, bytes(40000)), (1, True, False, bytes(40000))], "larger than"),
        ([(1, True, True, b"\0" * 12)], "Group Length"),
    ],
)
def test_sequencing_violations(pdvs: list[tuple[int, bool, bool, bytes]], reason: str) -> None:
    assembler = Assembler(lambda command: BufferSink())
    with pytest.raises(DimseError, match=reason):
        for pdv in pdvs:
            assembler.feed(*pdv)


def test_the_sink_is_chosen_per_message_and_abandoned_on_abort() -> None:
    chosen: list[Command] = []

    def start(command: Command) -> BufferSink:
        chosen.append(command)
        return BufferSink()

    assembler = Assembler(start)
    assert assembler.feed(1, True, True, ECHO) is not None and not chosen
    assert assembler.feed(1, True, True, STORE) is None
    assert [c.affected_sop_instance_uid for c in chosen] == [INSTANCE]
    assembler.feed(1, False, False, b"half")
    assert assembler.in_message and assembler.context_id == 1
    sink = assembler.abandon()
    assert isinstance(sink, BufferSink) and sink.data == b"half" and not sink.closed
    assert not assembler.in_message


def test_buffer_sink_is_bounded() -> None:
    assembler = Assembler(lambda command: BufferSink(limit=8))
    assembler.feed(1, True, True, STORE)
    with pytest.raises(DimseError, match="larger than 8"):
        assembler.feed(1, False, False, b"123456789")


# ---------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_command(raw: bytes) -> None:
    with contextlib.suppress(DimseError):
        assert isinstance(decode_command(raw), Command)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([raw for raw, _ in BUILT]), st.data())
def test_fuzz_mutated_command_sets(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DimseError):
        assert isinstance(decode_command(bytes(mutated[:cut])), Command)


_PDV = st.tuples(
    st.integers(0, 255),
    st.booleans(),
    st.booleans(),
    st.one_of(st.sampled_from([ECHO, STORE, STORE[:20], STORE[20:]]), st.binary(max_size=64)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PDV, max_size=12))
def test_fuzz_assembler(pdvs: list[tuple[int, bool, bool, bytes]]) -> None:
    assembler = Assembler(lambda command: BufferSink(limit=4096), max_command=1024)
    try:
        for pdv in pdvs:
            message = assembler.feed(*pdv)
            assert message is None or isinstance(message.command, Command)
    except DimseError:
        pass


def test_endless_command_fragments_stay_bounded() -> None:
    assembler = Assembler(lambda command: BufferSink())
    chunk = bytes(1024)
    tracemalloc.start()
    try:
        with pytest.raises(DimseError, match="larger than"):
            for _ in range(10_000):
                assembler.feed(1, True, False, chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * dimse.MAX_COMMAND_BYTES
