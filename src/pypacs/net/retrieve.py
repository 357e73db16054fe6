"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): the instances a request names are sent as C-STORE
sub-operations, over the request's own association (C-GET) or over one pypacs opens to the
move destination (C-MOVE).

The stored bytes go out as they are (a view of the stored file's data set) whenever the peer
accepted their transfer syntax, and are transcoded only when it did not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pypacs.archive import Archive, Retrieval, StoredInstance
from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pypacs.errors import IndexUnavailable, PypacsError
from pypacs.model.outcomes import Refused
from pypacs.model.sop import QR_GET, QR_MOVE
from pypacs.model.status import Status
from pypacs.net import dimse, pdu
from pypacs.net.association import Association, AssociationError, Message, Timeouts, connect
from pypacs.net.identifier import decode_identifier, encode_identifier
from pypacs.net.options import NetOptions
from pypacs.net.pdata import BufferSink
from pypacs.query.from_dimse import parse_retrieve
from pypacs.query.types import InvalidQuery, Query
from pypacs.remote.registry import Peer

log = logging.getLogger("pypacs.net")

# PS3.7 9.3.4.2 / 9.3.3.2: the sub-operation counts are US.
_MAX_SUB_OPERATIONS = 0xFFFF
# PS3.8 9.3.2.2: at most 128 presentation contexts (odd IDs 1-255) in one association.
_MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_WARNING_CLASS = 0xB  # PS3.4 B.2.3: statuses 0xBxxx are warnings


@dataclass(frozen=True)
class Failure:
    """A failure response's fields (PS3.7 C.4)."""

    status: int
    comment: str
    offending: tuple[int, ...] = ()


class Session(Protocol):
    """What the retrieve service asks of the association it serves (net/services.py)."""

    assoc: Association

    def count(self, what: str, n: int = 1) -> None: ...

    def cancelled(self, message_id: int) -> bool: ...

    def relational(self, sop_class: str) -> bool: ...

    def failure(self, service: str, exc: Exception, uid: object) -> Failure: ...

    def other(self, message: Message) -> None: ...


@dataclass
class Counts:
    """Sub-operation counts (PS3.4 C.4.2.1.6 and C.4.3.1.5)."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def add(self, outcome: Status | None, uid: str) -> None:
        self.remaining -= 1
        if outcome is None:
            self.failed += 1
            self.failed_uids.append(uid)
        elif outcome is Status.SUCCESS:
            self.completed += 1
        else:
            self.warning += 1

    def final_status(self) -> Status:
        # C.4.2.3.1: Success when all succeeded, Warning when one or more failed or had
        # warnings, Failure when all failed.
        if not self.failed and not self.warning:
            return Status.SUCCESS
        if not self.completed and not self.warning:
            return Status.UNABLE_TO_PERFORM_SUB_OPERATIONS
        return Status.SUB_OPERATIONS_WARNING


class StoreChannel:
    """An association over which pypacs is the C-STORE SCU for a retrieve's sub-operations.

    ``other`` takes any message that is not the awaited C-STORE-RSP (a C-CANCEL coming over
    a C-GET's own association); by default they are dropped.
    """

    def __init__(
        self,
        archive: Archive,
        assoc: Association,
        *,
        priority: int,
        originator: tuple[str, int] | None,
        timeout: float,
        other: Callable[[Message], None] | None = None,
    ) -> None:
        self.archive = archive
        self.assoc = assoc
        self.priority = priority
        self.originator = originator
        self.timeout = timeout
        self.other = other
        self._message_id = 0
        # SOP Class UID → accepted transfer syntax → presentation context ID; only contexts
        # where we may act as SCU (for C-GET, through SCP/SCU role selection, PS3.7 D.3.3.4).
        self.contexts: dict[str, dict[str, int]] = {}
        for cx in assoc.contexts.values():
            if cx.scu:
                by_syntax = self.contexts.setdefault(cx.abstract_syntax, {})
                by_syntax.setdefault(cx.transfer_syntax, cx.id)

    def send(self, stored: StoredInstance) -> tuple[Status | None, str]:
        """One C-STORE sub-operation: (SUCCESS | a warning status | None for failure, why)."""
        syntaxes = self.contexts.get(stored.sop_class_uid)
        if not syntaxes:
            return None, f"the peer accepted no presentation context for {stored.sop_class_uid}"
        try:
            out = self.archive.outgoing(stored, list(syntaxes))
        except PypacsError as exc:
            return None, str(exc)
        return self._store(stored, syntaxes[out.transfer_syntax_uid], out.data)

    def _store(
        self, stored: StoredInstance, context_id: int, payload: bytes | memoryview
    ) -> tuple[Status | None, str]:
        self._message_id = self._message_id % 0xFFFF + 1
        message_id = self._message_id
        originator_ae, originator_id = self.originator or (None, None)
        # PS3.7 9.3.1.1: a C-STORE for a C-MOVE names the move's originator.
        command = dimse.store_rq(
            message_id,
            stored.sop_class_uid,
            stored.sop_instance_uid,
            priority=self.priority,
            move_originator_ae=originator_ae,
            move_originator_message_id=originator_id,
        )
        try:
            self.assoc.send_message(context_id, command, payload)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.assoc.abort()
                    return None, f"no C-STORE response within {self.timeout:.0f} s"
                answer = self.assoc.receive(wait=left)
                if answer is None:
                    if not self.assoc.is_established:
                        return None, "the association ended"
                    continue
                rsp = answer.command
                if (
                    rsp.command_field == dimse.C_STORE_RSP
                    and rsp.message_id_being_responded_to == message_id
                ):
                    return _outcome(rsp.status)
                if self.other is not None:
                    self.other(answer)
        except AssociationError as exc:
            return None, f"the association ended: {exc}"


def _outcome(status: int | None) -> tuple[Status | None, str]:
    if status is None:
        return None, "the peer answered without a status"
    if status == Status.SUCCESS:
        return Status.SUCCESS, ""
    if status >> 12 == _WARNING_CLASS:
        return Status.SUB_OPERATIONS_WARNING, f"warning 0x{status:04X}"
    return None, f"the peer answered 0x{status:04X}"


def move_contexts(syntaxes: list[tuple[str, str]]) -> tuple[pdu.PresentationContextRQ, ...]:
    """What a C-MOVE proposes to its destination: each stored (SOP class, transfer syntax)
    as a context of its own, so that the peer can take each as stored, and per SOP class
    one uncompressed context to fall back to."""
    classes = sorted({sop_class for sop_class, _ in syntaxes})
    wanted: list[tuple[str, tuple[str, ...]]] = [(c, _UNCOMPRESSED) for c in classes]
    wanted += [(c, (ts,)) for c, ts in sorted(set(syntaxes))]
    # Past 128 contexts the exact ones are left out first: through the fallbacks every
    # SOP class still reaches the peer, transcoded.
    return tuple(
        pdu.PresentationContextRQ(2 * i + 1, sop_class, tuple(ts))
        for i, (sop_class, ts) in enumerate(wanted[:_MAX_CONTEXTS])
    )


def open_store_association(
    options: NetOptions, peer: Peer, syntaxes: list[tuple[str, str]]
) -> Association:
    """An association to ``peer`` proposing ``move_contexts(syntaxes)``, on which the
    calling thread sends C-STOREs through a ``StoreChannel``; end it with
    ``end_store_association``.

    Raises:
        Refused: UNABLE_TO_PERFORM_SUB_OPERATIONS, the peer refused or did not answer.
    """
    rq = pdu.AssociateRQ(
        called_ae=peer.ae_title,
        calling_ae=options.ae_title,
        contexts=move_contexts(syntaxes),
        user=pdu.UserInformation(
            max_length=options.max_pdu_size,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        ),
    )
    timeouts = Timeouts(
        artim=options.acse_timeout,
        pdu_read=options.pdu_read_timeout,
        dimse_idle=options.dimse_timeout,
    )
    try:
        out = connect(peer.host, peer.port, rq, timeouts)
    except AssociationError as exc:
        log.warning("association to %s failed: %s", peer, exc)
        raise Refused(
            Status.UNABLE_TO_PERFORM_SUB_OPERATIONS, f"{peer} refused or did not answer"
        ) from exc
    if not out.contexts:
        out.abort()
        raise Refused(Status.UNABLE_TO_PERFORM_SUB_OPERATIONS, f"{peer} accepted no context")
    return out


def end_store_association(out: Association) -> None:
    """Release an association ``open_store_association`` made."""
    with suppress(AssociationError):
        out.release()


class RetrieveService:
    """Serves C-MOVE and C-GET requests; one per server."""

    def __init__(self, archive: Archive, options: NetOptions) -> None:
        self.archive = archive
        self.options = options
        self._outgoing = threading.BoundedSemaphore(options.max_move_associations)

    def serve(self, session: Session, message: Message) -> None:
        """Answer one request: pending responses after each sub-operation, then a final one."""
        command = message.command
        is_move = command.command_field == dimse.C_MOVE_RQ
        service = "C-MOVE" if is_move else "C-GET"
        responder = _Responder(session.assoc, message, is_move)
        session.count("move" if is_move else "get")
        sop_class = command.affected_sop_class_uid or ""
        try:
            self._check_caller(session.assoc)
            models = QR_MOVE if is_move else QR_GET
            context = session.assoc.contexts[message.context_id]
            if sop_class not in models or context.abstract_syntax != sop_class:
                raise Refused(Status.PROCESSING_FAILURE, f"no {service} for {sop_class}")
            query = parse_retrieve(
                responder.identifier(), models[sop_class], relational=session.relational(sop_class)
            )
            destination = self._destination(command.move_destination) if is_move else None
            with self._located(query) as retrieval:
                counts = Counts(retrieval.count)
                if retrieval.count:
                    with self._channel(
                        session, command, destination, retrieval.syntaxes
                    ) as channel:
                        if not self._send_all(session, channel, retrieval, counts, responder):
                            return
            session.count("sent", counts.completed + counts.warning)
            responder.send(counts.final_status(), counts, final=True)
        except AssociationError:
            raise
        except Exception as exc:  # the one boundary where every failure becomes a status
            responder.fail(session.failure(service, exc, sop_class))

    def _send_all(
        self,
        session: Session,
        channel: StoreChannel,
        retrieval: Retrieval,
        counts: Counts,
        responder: _Responder,
    ) -> bool:
        """The sub-operations, one instance at a time; False when cancelled (answered)."""
        for stored in retrieval.instances:
            if session.cancelled(responder.message_id):
                # C.4.2.3.1: Cancel with the counts so far; Remaining is what never started.
                session.count("cancelled")
                responder.send(Status.CANCEL, counts, final=False)
                return False
            outcome, why = channel.send(stored)
            counts.add(outcome, stored.sop_instance_uid)
            if outcome is None:
                log.error(
                    "%s sub-operation for %s failed: %s",
                    responder.service,
                    stored.sop_instance_uid,
                    why,
                )
            if not channel.assoc.is_established:
                break
            # C.4.2.3.1, C.4.3.3.1: a pending response after each sub-operation, the last
            # one too (Remaining 0), as dcmqrscp does: some SCUs (GDCM's gdcmscu) wait for
            # one after every C-STORE they receive.
            responder.send(Status.PENDING, counts, final=False)
        # Whatever could not be sent (the association was lost) failed.
        for stored in retrieval.instances:
            counts.add(None, stored.sop_instance_uid)
        return True

    def _check_caller(self, assoc: Association) -> None:
        allowed = self.options.retrieve_allowed_aes
        calling = assoc.calling_ae.strip()
        if allowed and calling not in allowed:
            raise Refused(Status.NOT_AUTHORIZED, f"{calling!r} may not retrieve")

    def _destination(self, move_destination: str | None) -> Peer:
        title = (move_destination or "").strip()
        peer = self.options.remotes.by_ae_title(title)
        if peer is not None:
            return peer
        # PS3.4 C.4.2.1.5: the destination is not a known AE.
        raise Refused(Status.MOVE_DESTINATION_UNKNOWN, f"unknown move destination {title!r}")

    @contextmanager
    def _located(self, query: Query) -> Iterator[Retrieval]:
        try:
            with self.archive.retrieve(query) as retrieval:
                if retrieval.count > _MAX_SUB_OPERATIONS:
                    raise Refused(
                        Status.UNABLE_TO_CALCULATE_MATCHES,
                        f"{retrieval.count} instances; retrieve by study or series",
                    )
                yield retrieval
        except IndexUnavailable as exc:
            raise Refused(Status.UNABLE_TO_CALCULATE_MATCHES, str(exc)) from exc

    @contextmanager
    def _channel(
        self,
        session: Session,
        command: dimse.Command,
        destination: Peer | None,
        syntaxes: list[tuple[str, str]],
    ) -> Iterator[StoreChannel]:
        priority = command.priority or 0
        if destination is None:
            # C-GET: the sub-operations go over the request's own association; a C-CANCEL
            # read while awaiting a C-STORE-RSP is kept for the next check.
            yield StoreChannel(
                self.archive,
                session.assoc,
                priority=priority,
                originator=None,
                timeout=self.options.dimse_timeout,
                other=session.other,
            )
            return
        if not self._outgoing.acquire(timeout=self.options.acse_timeout):
            raise Refused(
                Status.UNABLE_TO_PERFORM_SUB_OPERATIONS,
                f"all {self.options.max_move_associations} outgoing associations are busy",
            )
        try:
            out = open_store_association(self.options, destination, syntaxes)
            originator = (session.assoc.calling_ae.strip(), command.message_id or 0)
            try:
                yield StoreChannel(
                    self.archive,
                    out,
                    priority=priority,
                    originator=originator,
                    timeout=self.options.dimse_timeout,
                )
            finally:
                end_store_association(out)
        finally:
            self._outgoing.release()


class _Responder:
    """Builds and sends the C-GET/C-MOVE responses of one request."""

    def __init__(self, assoc: Association, message: Message, is_move: bool) -> None:
        self.assoc = assoc
        self.message = message
        self.command = message.command
        self.message_id = message.command.message_id or 0
        self.sop_class = message.command.affected_sop_class_uid or ""
        self.syntax = assoc.contexts[message.context_id].transfer_syntax
        self.build = dimse.move_rsp if is_move else dimse.get_rsp
        self.service = "C-MOVE" if is_move else "C-GET"

    def identifier(self) -> Dataset:
        sink = self.message.sink
        data = sink.data if isinstance(sink, BufferSink) else b""
        try:
            return decode_identifier(data, self.syntax)
        except Exception as exc:
            raise InvalidQuery(f"identifier does not parse: {exc}", unsupported=True) from exc

    def send(self, status: Status, counts: Counts, *, final: bool) -> None:
        dataset: bytes | None = None
        if counts.failed_uids and status is not Status.PENDING:
            # C.4.2.1.6 / C.4.3.1.5: the failed instances, in the response identifier.
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = counts.failed_uids
            dataset = encode_identifier(failed, self.syntax)
        command = self.build(
            self.message_id,
            self.sop_class,
            int(status),
            # PS3.7 9.3.3.2, 9.3.4.2: no Remaining count in a final response.
            remaining=None if final else counts.remaining,
            completed=counts.completed,
            failed=counts.failed,
            warning=counts.warning,
            has_dataset=dataset is not None,
        )
        self.assoc.send_message(self.message.context_id, command, dataset)

    def fail(self, failure: Failure) -> None:
        if not self.assoc.is_established:
            return
        command = self.build(
            self.message_id,
            self.sop_class,
            failure.status,
            error_comment=failure.comment,
            offending_elements=failure.offending,
        )
        self.assoc.send_message(self.message.context_id, command)
