"""net/sending.py's send_all, the one sending path of the exporter and of C-MOVE/C-GET
sub-operations: counts by the peer's statuses, the failed UIDs, Move Originator on every
C-STORE, cancel leaving the rest Remaining, a lost association failing the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from pypacs.archive import Archive, StoredInstance
from pypacs.archive.outgoing import Outgoing
from pypacs.errors import StoreError
from pypacs.net import dimse
from pypacs.net.acceptor import Acceptor, Limits, Offer, negotiate
from pypacs.net.association import Association, AssociationError, Identity, Timeouts
from pypacs.net.requestor import Requestor
from pypacs.net.sending import Counts, StoreSender, send_all
from pypacs.remote.registry import Peer

TIMEOUTS = Timeouts(artim=2.0, pdu_read=1.0, dimse_idle=2.0)
UNREADABLE = "1.2.3.99"


class _Blobs:
    """An archive whose every instance is a few bytes, as stored; one is unreadable."""

    def outgoing(self, stored: StoredInstance, accepted: list[str], form: object) -> Outgoing:
        if stored.sop_instance_uid == UNREADABLE:
            raise StoreError("blob missing")
        return Outgoing(accepted[0], stored.sop_instance_uid.encode().ljust(8, b"\0"), True)


def _instance(uid: str, sop_class: str = CTImageStorage) -> StoredInstance:
    return StoredInstance(uid, sop_class, ExplicitVRLittleEndian, "key", 8)


@contextmanager
def _peer(answer: Callable[[dimse.Command], int | None]) -> Iterator[Requestor]:
    """Our acceptor answering each C-STORE with ``answer`` (None: abort instead)."""

    def service(assoc: Association) -> None:
        try:
            while (message := assoc.receive()) is not None:
                command = message.command
                status = answer(command)
                if status is None:
                    assoc.abort()
                    return
                assoc.send_message(
                    message.context_id,
                    dimse.store_rsp(
                        command.message_id or 0,
                        command.affected_sop_class_uid or "",
                        command.affected_sop_instance_uid or "",
                        status,
                    ),
                )
        except AssociationError:
            pass

    offers = {str(CTImageStorage): Offer(frozenset({ExplicitVRLittleEndian}))}
    acceptor = Acceptor(
        "127.0.0.1",
        0,
        decide=lambda rq, address: negotiate(rq, offers),
        on_association=service,
        identity=Identity(32768, "1.2.3.4", "TEST"),
        timeouts=TIMEOUTS,
        limits=Limits(),
    )
    acceptor.start()
    try:
        remote = Peer("test", "PEER", "127.0.0.1", acceptor.address[1])
        proposals = [(CTImageStorage, (ExplicitVRLittleEndian,))]
        requestor = Requestor.open(remote, "SCU", proposals, timeouts=TIMEOUTS)
        try:
            yield requestor
        finally:
            requestor.end(completed=True)
    finally:
        acceptor.stop()


def test_each_status_counted_and_the_failures_listed() -> None:
    statuses = {"1.2.3.1": 0x0000, "1.2.3.2": 0xB007, "1.2.3.3": 0xA700, "1.2.3.4": 0x0001}
    seen: list[tuple[str | None, str | None, int | None]] = []

    def answer(command: dimse.Command) -> int:
        uid = command.affected_sop_instance_uid or ""
        seen.append((uid, command.move_originator_ae, command.move_originator_message_id))
        return statuses[uid]

    uids = [*statuses, UNREADABLE]
    instances = [_instance(u) for u in uids] + [_instance("1.2.3.5", MRImageStorage)]
    counts = Counts(len(instances))
    progress: list[tuple[int, int, int, int]] = []
    with _peer(answer) as requestor:
        finished = send_all(
            cast(Archive, _Blobs()),
            StoreSender(requestor.assoc, timeout=2.0),
            iter(instances),
            counts,
            what="C-MOVE sub-operation",
            cancelled=lambda: False,
            on_progress=lambda: progress.append(
                (counts.remaining, counts.completed, counts.failed, counts.warning)
            ),
            originator=("MOVER", 7),
        )
    assert finished
    assert seen == [(uid, "MOVER", 7) for uid in statuses]
    assert (counts.remaining, counts.completed, counts.failed, counts.warning) == (0, 1, 3, 2)
    # The peer's failure, the unreadable blob, the SOP class the peer did not accept.
    assert counts.failed_uids == ["1.2.3.3", UNREADABLE, "1.2.3.5"]
    assert progress[0] == (5, 1, 0, 0) and progress[-1] == (0, 1, 3, 2)
    assert len(progress) == 6
    assert counts.final_status() == 0xB000


def test_cancel_leaves_the_rest_remaining() -> None:
    instances = [_instance(f"1.2.3.{n}") for n in range(1, 6)]
    counts = Counts(len(instances))
    sent: list[int] = []
    with _peer(lambda command: 0x0000) as requestor:
        finished = send_all(
            cast(Archive, _Blobs()),
            StoreSender(requestor.assoc, timeout=2.0),
            iter(instances),
            counts,
            what="C-GET sub-operation",
            cancelled=lambda: len(sent) == 2,
            on_progress=lambda: sent.append(counts.completed),
        )
    assert not finished
    assert (counts.remaining, counts.completed, counts.failed, counts.failed_uids) == (3, 2, 0, [])


def test_a_lost_association_fails_what_was_not_sent() -> None:
    instances = [_instance(f"1.2.3.{n}") for n in range(1, 5)]
    counts = Counts(len(instances))

    def answer(command: dimse.Command) -> int | None:
        return None if command.affected_sop_instance_uid == "1.2.3.2" else 0x0000

    with _peer(answer) as requestor:
        finished = send_all(
            cast(Archive, _Blobs()),
            StoreSender(requestor.assoc, timeout=2.0),
            iter(instances),
            counts,
            what="C-STORE to PEER",
            cancelled=lambda: False,
            on_progress=lambda: None,
        )
        assert not requestor.assoc.is_established
    assert finished
    assert (counts.remaining, counts.completed, counts.failed) == (0, 1, 3)
    assert counts.failed_uids == ["1.2.3.2", "1.2.3.3", "1.2.3.4"]
    assert counts.final_status() == 0xB000
