"""The requestor side on our engine (net/requestor.py, net/sending.py, net/scu.py) against
peers made of our own acceptor, whose every answer a test sets."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
)

from pypacs.archive.part10 import encode_dataset
from pypacs.model.levels import InformationModel
from pypacs.net import dimse, pdu
from pypacs.net.acceptor import Acceptor, Limits, Offer, negotiate
from pypacs.net.association import Aborted, Association, AssociationError, Decision, Identity
from pypacs.net.association import Timeouts as EngineTimeouts
from pypacs.net.identifier import IdentifierError, decode_identifier
from pypacs.net.requestor import Requestor
from pypacs.net.scu import echo, find
from pypacs.net.sending import Counts, StoreSender, store_contexts
from pypacs.remote.registry import Peer, RemoteError

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
TIMEOUTS = EngineTimeouts(artim=2.0, pdu_read=1.0, dimse_idle=2.0)

Service = Callable[[Association], None]


@contextmanager
def peer(
    service: Service, offers: dict[str, Offer], seen: list[pdu.AssociateRQ] | None = None
) -> Iterator[Peer]:
    """Our acceptor as the remote, called "PEER"; any other called AE is rejected."""

    def decide(rq: pdu.AssociateRQ, address: tuple[str, int]) -> Decision:
        if seen is not None:
            seen.append(rq)
        if rq.called_ae != "PEER":
            return Decision(
                reject=pdu.AssociateRJ(
                    pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE_NOT_RECOGNIZED
                )
            )
        return negotiate(rq, offers)

    acceptor = Acceptor(
        "127.0.0.1",
        0,
        decide=decide,
        on_association=service,
        identity=Identity(32768, "1.2.3.4", "TEST"),
        timeouts=TIMEOUTS,
        limits=Limits(),
    )
    acceptor.start()
    try:
        yield Peer("test", "PEER", "127.0.0.1", acceptor.address[1])
    finally:
        acceptor.stop()


def served_until_end(handle: Callable[[Association, dimse.Command, bytes | None], None]) -> Service:
    """A service answering each message with ``handle`` until the association ends."""

    def service(assoc: Association) -> None:
        try:
            while (message := assoc.receive()) is not None:
                handle(assoc, message.command, message.dataset)
        except AssociationError:
            pass

    return service


# -- StoreSender ----------------------------------------------------------------------------


def test_store_sender_sends_the_bytes_and_reads_each_status() -> None:
    got: list[tuple[dimse.Command, bytes | None]] = []
    answers = iter([(0x0000, None), (0xB000, None), (0xA700, "disk full")])

    def handle(assoc: Association, command: dimse.Command, data: bytes | None) -> None:
        got.append((command, data))
        status, comment = next(answers)
        assert command.message_id is not None
        rsp = dimse.store_rsp(
            command.message_id,
            command.affected_sop_class_uid or "",
            command.affected_sop_instance_uid or "",
            status,
            error_comment=comment,
        )
        assoc.send_message(1, rsp)

    offers = {str(CTImageStorage): Offer(SYNTAXES)}
    with peer(served_until_end(handle), offers) as remote:
        requestor = Requestor.open(
            remote, "SCU", [(CTImageStorage, (ExplicitVRLittleEndian,))], timeouts=TIMEOUTS
        )
        sender = StoreSender(requestor.assoc, timeout=5.0, priority=dimse.PRIORITY_LOW)
        assert sender.accepted(CTImageStorage) == [ExplicitVRLittleEndian]
        assert sender.accepted(MRImageStorage) == []
        data = bytes(range(256)) * 1000  # several PDUs of the peer's 32 KiB
        results = [
            sender.send(CTImageStorage, "1.2.3.1", ExplicitVRLittleEndian, data),
            sender.send(
                CTImageStorage,
                "1.2.3.2",
                ExplicitVRLittleEndian,
                memoryview(data)[:10],
                ("MOVER", 7),
            ),
            sender.send(CTImageStorage, "1.2.3.3", ExplicitVRLittleEndian, b"\0\0"),
        ]
        with pytest.raises(ValueError, match="no accepted context"):
            sender.send(CTImageStorage, "1.2.3.4", ImplicitVRLittleEndian, b"")
        requestor.end(completed=True)
    assert [(r.status, r.error_comment) for r in results] == [
        (0x0000, None),
        (0xB000, None),
        (0xA700, "disk full"),
    ]
    assert [c.affected_sop_instance_uid for c, _ in got] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert [c.message_id for c, _ in got] == [1, 2, 3]
    assert {c.priority for c, _ in got} == {dimse.PRIORITY_LOW}
    assert [d for _, d in got] == [data, data[:10], b"\0\0"]
    # PS3.7 9.3.1.1: only a C-MOVE's sub-operation names its originator.
    assert [(c.move_originator_ae, c.move_originator_message_id) for c, _ in got] == [
        (None, None),
        ("MOVER", 7),
        (None, None),
    ]


def test_store_sender_aborts_when_no_response_comes() -> None:
    ended = threading.Event()

    def silent(assoc: Association) -> None:
        try:
            while assoc.receive() is not None:
                pass
        except AssociationError:
            ended.set()

    with peer(silent, {CTImageStorage: Offer(SYNTAXES)}) as remote:
        requestor = Requestor.open(
            remote, "SCU", [(CTImageStorage, (ExplicitVRLittleEndian,))], timeouts=TIMEOUTS
        )
        sender = StoreSender(requestor.assoc, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(Aborted, match="no C-STORE response within 0 s"):
            sender.send(CTImageStorage, "1.2.3", ExplicitVRLittleEndian, b"\0\0")
        assert time.monotonic() - start < 1.5
        assert not requestor.assoc.is_established
        assert ended.wait(5), "the peer did not see the A-ABORT"


def test_store_contexts_offer_each_stored_syntax_and_a_fallback_within_128() -> None:
    stored = [
        (MRImageStorage, JPEG2000Lossless),
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, ExplicitVRLittleEndian),
    ]
    plain = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert store_contexts(stored) == [
        (CTImageStorage, plain),
        (MRImageStorage, plain),
        (CTImageStorage, (ExplicitVRLittleEndian,)),
        (MRImageStorage, (JPEG2000Lossless,)),
    ]
    many = [(f"1.2.3.{i}", ExplicitVRLittleEndian) for i in range(100)]
    proposed = store_contexts(many)
    assert len(proposed) == pdu.MAX_CONTEXTS
    # Every class keeps its fallback; the exact contexts are cut first.
    assert {c for c, ts in proposed if ts == plain} == {c for c, _ in many}


def test_counts_follow_the_statuses_of_ps34_c423() -> None:
    counts = Counts(5)
    for status, uid in [(0x0000, "a"), (0xB007, "b"), (0x0001, "c"), (0xA700, "d"), (None, "e")]:
        counts.add(status, uid)
    assert (counts.remaining, counts.completed, counts.warning, counts.failed) == (0, 1, 2, 2)
    assert counts.failed_uids == ["d", "e"]
    assert counts.final_status() == 0xB000
    only_failed = Counts(1)
    only_failed.add(0xC000, "x")
    assert only_failed.final_status() == 0xA702
    assert Counts(0).final_status() == 0x0000


# -- scu over the requestor -----------------------------------------------------------------


def test_echo_reads_a_failure_status_and_a_rejection() -> None:
    def handle(assoc: Association, command: dimse.Command, data: bytes | None) -> None:
        assert command.message_id is not None
        assoc.send_message(1, dimse.echo_rsp(command.message_id, 0x0110))

    offers = {dimse.VERIFICATION_SOP_CLASS: Offer(SYNTAXES)}
    with peer(served_until_end(handle), offers) as remote:
        with pytest.raises(RemoteError, match=r"^PEER answered the C-ECHO with 0x0110$"):
            echo(remote, "SCU", timeout=2)
        other = Peer("other", "OTHER", remote.host, remote.port)
        with pytest.raises(RemoteError) as rejected:
            echo(other, "SCU", timeout=2)
    assert str(rejected.value) == (
        f"OTHER at 127.0.0.1:{remote.port} rejected the association "
        "(check its AE title and that it accepts ours)"
    )


def patient(name: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientName = name
    return ds


def test_find_proposes_relational_and_reads_each_response() -> None:
    seen: list[pdu.AssociateRQ] = []
    identifiers: list[Dataset] = []

    def handle(assoc: Association, command: dimse.Command, data: bytes | None) -> None:
        assert command.message_id is not None and data is not None
        syntax = assoc.contexts[1].transfer_syntax
        identifiers.append(decode_identifier(data, syntax))
        for name in ("Doe^A", "Doe^B"):
            rsp = dimse.find_rsp(command.message_id, STUDY_FIND, 0xFF00, has_dataset=True)
            assoc.send_message(1, rsp, encode_dataset(patient(name), syntax))
        final = dimse.find_rsp(command.message_id, STUDY_FIND, 0xA700, error_comment="enough")
        assoc.send_message(1, final)

    offers = {STUDY_FIND: Offer(SYNTAXES, extended=lambda info: info[:1])}
    with peer(served_until_end(handle), offers, seen) as remote:
        results = list(
            find(remote, "SCU", InformationModel.STUDY_ROOT, patient("Doe*"), relational=True)
        )
    assert seen[0].user.extended == (pdu.ExtendedNegotiation(STUDY_FIND, b"\x01"),)
    assert [str(ds.PatientName) for ds in identifiers] == ["Doe*"]
    assert [(r.status, r.error_comment) for r in results] == [
        (0xFF00, None),
        (0xFF00, None),
        (0xA700, "enough"),
    ]
    assert [str(r.identifier.PatientName) for r in results if r.identifier] == ["Doe^A", "Doe^B"]
    assert results[-1].identifier is None


def test_find_from_a_peer_going_silent_raises_within_the_timeout() -> None:
    def handle(assoc: Association, command: dimse.Command, data: bytes | None) -> None:
        pass  # never answers

    offers = {STUDY_FIND: Offer(SYNTAXES)}
    with peer(served_until_end(handle), offers) as remote:
        start = time.monotonic()
        with pytest.raises(RemoteError, match=r"^PEER stopped answering \(association lost: "):
            list(find(remote, "SCU", InformationModel.STUDY_ROOT, patient("*"), timeout=0.5))
        assert time.monotonic() - start < 3


def test_a_caller_stopping_early_aborts_the_association() -> None:
    outcome: list[str] = []

    def service(assoc: Association) -> None:
        try:
            while (message := assoc.receive()) is not None:
                assert message.command.message_id is not None
                rsp = dimse.find_rsp(
                    message.command.message_id, STUDY_FIND, 0xFF00, has_dataset=True
                )
                syntax = assoc.contexts[1].transfer_syntax
                for _ in range(3):
                    assoc.send_message(1, rsp, encode_dataset(patient("X"), syntax))
            outcome.append("released")
        except Aborted as exc:
            outcome.append(f"aborted by source {exc.source}")
        except AssociationError:
            outcome.append("lost")

    with peer(service, {STUDY_FIND: Offer(SYNTAXES)}) as remote:
        results = find(remote, "SCU", InformationModel.STUDY_ROOT, patient("*"), timeout=2)
        assert next(results).status == 0xFF00
        assert isinstance(results, Generator)
        results.close()
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.01)
    assert outcome == [f"aborted by source {pdu.ABORT_SOURCE_USER}"]


# -- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_identifiers_round_trip(syntax: str) -> None:
    ds = patient("Ünïcode^Name")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = "1.2.3.4"
    back = decode_identifier(encode_dataset(ds, syntax), syntax)
    assert (str(back.PatientName), back.StudyInstanceUID) == ("Ünïcode^Name", "1.2.3.4")


def test_a_deflated_identifier_inflating_past_the_bound_is_refused() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(bytes(64 * 1024 * 1024)) + deflater.flush()  # 64 KiB on the wire
    with pytest.raises(IdentifierError, match="inflates past"):
        decode_identifier(bomb, DeflatedExplicitVRLittleEndian)
    with pytest.raises(IdentifierError, match="does not inflate"):
        decode_identifier(b"\xff" * 10, DeflatedExplicitVRLittleEndian)


# pydicom reads an element of the other VR encoding than the syntax says, with a warning.
@pytest.mark.filterwarnings("ignore:Expected (explicit|implicit) VR")
@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=256),
    syntax=st.sampled_from([ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
)
def test_any_bytes_decode_to_a_dataset_or_identifier_error(data: bytes, syntax: str) -> None:
    try:
        ds = decode_identifier(data, syntax)
    except IdentifierError:
        return
    assert isinstance(ds, Dataset)
