"""The provider side of the DICOM port: per association, receive a message, dispatch it by
its command field to one archive call, answer. C-ECHO, C-STORE (streamed into the blob
file), C-FIND (identifiers encoded straight to bytes, several responses per PDU), C-GET and
C-MOVE (net/retrieve.py), C-CANCEL; anything else is answered Unrecognized Operation.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable

from pypacs import audit
from pypacs.archive import Archive, Outcome
from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pypacs.archive.receive import Receiving
from pypacs.errors import InvalidQuery, PypacsError
from pypacs.model.access import ALL_SERVICES, Service
from pypacs.model.outcomes import Refused, status_for
from pypacs.model.sop import QR_FIND
from pypacs.model.status import Status
from pypacs.net import dimse, pdu
from pypacs.net.acceptor import Acceptor, Limits, negotiate
from pypacs.net.access import AccessPolicy, Refusal, proposed_services
from pypacs.net.association import (
    Aborted,
    Association,
    Decision,
    Identity,
    Message,
    Timeouts,
    rejection,
)
from pypacs.net.identifier import MAX_IDENTIFIER_BYTES, request_identifier
from pypacs.net.negotiation import Allowed, Offers, storage_classes
from pypacs.net.options import NetOptions
from pypacs.net.pdata import BufferSink, Sink
from pypacs.net.retrieve import Failure, RetrieveService
from pypacs.net.transport import Closed
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.respond import ResponseContext
from pypacs.query.types import QueryOptions

log = logging.getLogger("pypacs.net")

_LO_LENGTH = 64  # ErrorComment is LO (PS3.5 6.2)
_IDENTIFIER_LIMIT = MAX_IDENTIFIER_BYTES  # our bound on a request's identifier (50,000 UIDs: 3 MB)
# C-FIND responses packed per send: the first goes alone (the SCU sees it at once), then
# batches grow to this many, or to this many bytes of identifiers.
_FIND_BATCH = 32
_FIND_BATCH_BYTES = 256 * 1024
# PS3.8 9.3.4 Table 9-21: A-ASSOCIATE-RJ (source, reason), as the audit trail tells them.
_RJ_REASONS = {
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED): (
        "application context name not supported"
    ),
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLING_AE_NOT_RECOGNIZED): "calling AE title not recognized",
    (pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE_NOT_RECOGNIZED): "called AE title not recognized",
    (pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED): (
        "protocol version not supported"
    ),
    (pdu.RJ_SOURCE_PRESENTATION, pdu.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED): "local limit exceeded",
}
_EVERY_SERVICE = frozenset(ALL_SERVICES)


class _StoreSink:
    """A C-STORE data set streamed into the file that becomes its blob (Archive.receive);
    a failure is kept for the response, and the rest of the data set is read and dropped."""

    __slots__ = ("error", "receiving")

    def __init__(self, start: Callable[[], Receiving]) -> None:
        self.receiving: Receiving | None = None
        self.error: Exception | None = None
        try:
            self.receiving = start()
        except Exception as exc:
            self.error = exc

    def write(self, data: memoryview, /) -> None:
        if self.error is None and self.receiving is not None:
            try:
                self.receiving.write(data)
            except Exception as exc:
                self.error = exc

    def close(self) -> None:
        """The data set is complete (``finish`` stores it)."""

    def discard(self) -> None:
        if self.receiving is not None:
            self.receiving.abandon()


class _Session:
    """One association's state: what it did, cancels seen, messages put aside."""

    def __init__(self, service: DicomService, assoc: Association) -> None:
        self.service = service
        self.assoc = assoc
        self.counts: Counter[str] = Counter()
        self.cancelled_ids: set[int] = set()
        self.backlog: deque[Message] = deque()
        # What the audit trail records at the association's end (audit/auditor.py).
        self.trail = service.auditor.association_started(assoc.calling_ae, assoc.peer[0])
        self.store: _StoreSink | None = None
        # SOP Class Extended Negotiation we accepted (PS3.4 C.5.1.1): class -> reply bytes.
        self.extended = {item.sop_class: item.info for item in assoc.ac.user.extended}
        self.services = service.access.services(assoc.calling_ae)

    def check(self, service: Service) -> None:
        """A request over a context negotiated for another service (or one that serves
        several) is refused too: a caller uses only the services it is allowed.

        Raises:
            Refused: Not Authorized (PS3.7 Annex C, a status every DIMSE service may answer).
        """
        if service in self.services:
            return
        access = self.service.access
        reason = access.why_not(self.assoc.calling_ae)
        access.refused(
            Refusal(
                self.assoc.calling_ae.strip(),
                self.assoc.called_ae.strip(),
                _address(self.assoc),
                reason,
                service,
            )
        )
        raise Refused(Status.NOT_AUTHORIZED, f"{service.value} {reason}")

    def sink_for(self, command: dimse.Command, context_id: int) -> Sink:
        if command.command_field != dimse.C_STORE_RQ:
            return BufferSink(_IDENTIFIER_LIMIT)
        context = self.assoc.contexts[context_id]
        archive = self.service.archive

        def start() -> Receiving:
            self.check(Service.STORE)  # before a byte of the data set is kept
            return archive.receive(
                command.affected_sop_class_uid or "",
                command.affected_sop_instance_uid or "",
                context.transfer_syntax,
            )

        self.store = _StoreSink(start)
        return self.store

    def next_message(self) -> Message | None:
        if self.backlog:
            return self.backlog.popleft()
        return self.assoc.receive(sinks=self.sink_for)

    # -- what net/retrieve.py asks --

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def other(self, message: Message) -> None:
        """A message that came while a request was under way: a C-CANCEL is noted
        (PS3.7 9.3.2.3), anything else waits its turn."""
        if message.command.command_field == dimse.C_CANCEL_RQ:
            self.cancelled_ids.add(message.command.message_id_being_responded_to or 0)
        else:
            self.backlog.append(message)

    def cancelled(self, message_id: int) -> bool:
        """Whether a C-CANCEL named ``message_id``; reads what has arrived, never waits."""
        while message_id not in self.cancelled_ids and self.assoc.conn.wait_readable(0):
            message = self.assoc.receive(wait=0, sinks=self.sink_for)
            if message is None:
                break
            self.other(message)
        return message_id in self.cancelled_ids

    def relational(self, sop_class: str) -> bool:
        info = self.extended.get(sop_class, b"")
        return len(info) > 0 and info[0] == 1

    def combined(self, sop_class: str) -> bool:
        info = self.extended.get(sop_class, b"")
        return len(info) > 1 and info[1] == 1

    def failure(self, service: str, exc: Exception, uid: object) -> Failure:
        """The failure response for ``exc``, logged with the calling AE title and address."""
        status = status_for(exc)
        self.count("failed")
        calling = self.assoc.calling_ae.strip() or "?"
        where = _address(self.assoc)
        if status is Status.PROCESSING_FAILURE:
            log.exception("%s from %s of %s failed unexpectedly (%s)", service, calling, uid, where)
        else:
            log.error(
                "%s from %s of %s refused with 0x%04X: %s (%s)",
                service,
                calling,
                uid,
                status,
                exc,
                where,
            )
        # Only our own errors are told; any other text (a database's) stays in the log.
        told = str(exc) if isinstance(exc, PypacsError) else "unexpected failure; see the log"
        tag = getattr(exc, "tag", None)
        return Failure(int(status), told[:_LO_LENGTH], (int(tag),) if tag is not None else ())


def _address(assoc: Association) -> str:
    host, port = assoc.peer
    return f"{host}:{port}"


class DicomService:
    """pypacs' DICOM port on its own engine: negotiation and the services; one per process."""

    def __init__(
        self, archive: Archive, options: NetOptions, auditor: audit.Auditor | None = None
    ) -> None:
        self.archive = archive
        self.options = options
        self.auditor = auditor or audit.NullAuditor()
        self.offers = Offers(storage_classes(), accept_unknown=options.accept_unknown_sop_classes)
        self.retrieve = RetrieveService(archive, options, self.auditor)
        self.access = AccessPolicy(options)
        self._context = ResponseContext(ae_title=options.ae_title)

    def acceptor(
        self, sock: socket.socket | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> Acceptor:
        """An Acceptor (not yet started) on ``sock`` or the configured host and port; over
        TLS with ``ssl_context`` (each connection's handshake in its own thread)."""
        options = self.options
        return Acceptor(
            options.host,
            options.port,
            decide=self.decide,
            on_association=self.serve,
            on_reject=self._rejected,
            identity=Identity(
                max_pdu=options.max_pdu_size,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            ),
            timeouts=Timeouts(
                artim=options.artim_timeout,
                pdu_read=options.pdu_read_timeout,
                dimse_idle=options.dimse_idle_timeout,
            ),
            limits=Limits(
                max_associations=options.max_associations,
                max_negotiating=options.max_negotiating,
                max_negotiating_per_address=options.max_negotiating_per_address,
            ),
            sock=sock,
            ssl_context=ssl_context,
        )

    def decide(self, rq: pdu.AssociateRQ, peer: tuple[str, int]) -> Decision:
        """The answer to an A-ASSOCIATE-RQ: rejected when the access rules refuse the
        caller; otherwise each context against what we offer it."""
        access = self.access
        refusal = access.decide_association(rq.calling_ae, rq.called_ae, peer)
        if refusal is not None:
            access.refused(refusal)
            rj = refusal.rejection()
            return rejection(rj.result, rj.source, rj.reason)
        services = access.services(rq.calling_ae)
        if services == _EVERY_SERVICE:
            return negotiate(rq, self.offers)
        for service in sorted(proposed_services(rq) - services):
            # PS3.8 9.3.3.2: its contexts are answered user-rejection.
            access.refused(
                Refusal(
                    rq.calling_ae.strip(),
                    rq.called_ae.strip(),
                    f"{peer[0]}:{peer[1]}",
                    access.why_not(rq.calling_ae),
                    service,
                )
            )
        return negotiate(rq, Allowed(self.offers, services))

    def _rejected(self, rq: pdu.AssociateRQ, peer: tuple[str, int], rj: pdu.AssociateRJ) -> None:
        """PS3.15 A.5.3.11: a refused association is a security alert."""
        why = _RJ_REASONS.get((rj.source, rj.reason), "no reason given")
        self.auditor.association_refused(
            rq.calling_ae,
            rq.called_ae,
            peer[0],
            f"A-ASSOCIATE-RJ {rj.result}/{rj.source}/{rj.reason}, {why}",
        )

    def serve(self, assoc: Association) -> None:
        """Serve one association until it ends; then one log line says who, from where,
        what it did and how it ended."""
        session = _Session(self, assoc)
        started = time.monotonic()
        outcome = "closed without release"
        try:
            while (message := session.next_message()) is not None:
                self._dispatch(session, message)
            outcome = "released"
        except Aborted as exc:
            outcome = "closed without release" if isinstance(exc.__cause__, Closed) else "aborted"
        finally:
            if session.store is not None:
                session.store.discard()
            session.trail.ended()
            did = ", ".join(f"{n} {what}" for what, n in sorted(session.counts.items()))
            log.info(
                "association from %s at %s to %s: %s; %s after %.3f s",
                assoc.calling_ae.strip() or "?",
                _address(assoc),
                assoc.called_ae.strip(),
                did or "nothing",
                outcome,
                time.monotonic() - started,
            )

    def _dispatch(self, session: _Session, message: Message) -> None:
        field = message.command.command_field
        if field == dimse.C_STORE_RQ:
            self._store(session, message)
        elif field == dimse.C_ECHO_RQ:
            self._echo(session, message)
        elif field == dimse.C_FIND_RQ:
            self._find(session, message)
        elif field in (dimse.C_GET_RQ, dimse.C_MOVE_RQ):
            self.retrieve.serve(session, message)
        elif field == dimse.C_CANCEL_RQ:
            pass  # its request has been answered already (PS3.7 9.3.2.3)
        elif message.command.is_response:
            log.warning("%s sent an unexpected response 0x%04X", session.assoc.calling_ae, field)
        else:
            self._unrecognized(session, message)

    def _echo(self, session: _Session, message: Message) -> None:
        session.count("echo")
        status, comment = int(Status.SUCCESS), None
        try:
            session.check(Service.ECHO)
        except Refused as exc:
            failure = session.failure("C-ECHO", exc, message.command.affected_sop_class_uid)
            status, comment = failure.status, failure.comment
        session.assoc.send_message(
            message.context_id,
            dimse.echo_rsp(
                message.command.message_id or 0,
                status,
                sop_class=message.command.affected_sop_class_uid or dimse.VERIFICATION_SOP_CLASS,
                error_comment=comment,
            ),
        )

    def _audit_find(self, session: _Session, message: Message, outcome: audit.Outcome) -> None:
        """PS3.15 A.5.3.10: the C-FIND identifier as sent, with its transfer syntax."""
        if self.auditor.enabled:
            sink = message.sink
            self.auditor.query(
                session.trail.calling,
                message.command.affected_sop_class_uid or "",
                sink.data if isinstance(sink, BufferSink) else b"",
                session.assoc.contexts[message.context_id].transfer_syntax,
                outcome,
            )

    def _unrecognized(self, session: _Session, message: Message) -> None:
        """PS3.7 C.4.2: a request we do not serve is refused, Unrecognized Operation."""
        command = message.command
        session.count("failed")
        log.error(
            "%s sent unsupported command 0x%04X", session.assoc.calling_ae, command.command_field
        )
        answer = dimse.Command(
            command.command_field | 0x8000,
            dimse.DATA_SET_ABSENT,
            command.affected_sop_class_uid or command.requested_sop_class_uid,
            message_id_being_responded_to=command.message_id or 0,
            status=Status.UNRECOGNIZED_OPERATION,
        )
        session.assoc.send_message(message.context_id, dimse.encode_command(answer))

    def _store(self, session: _Session, message: Message) -> None:
        command = message.command
        sop_class = command.affected_sop_class_uid or ""
        sop_instance = command.affected_sop_instance_uid or ""
        sink, session.store = session.store, None
        status, comment = int(Status.SUCCESS), None
        offending: tuple[int, ...] = ()
        try:
            if sink is None or message.sink is not sink:
                raise PypacsError("the C-STORE came without its data set")
            if sink.error is not None:
                raise sink.error
            assert sink.receiving is not None
            result = sink.receiving.finish(
                expected_sop_class=sop_class, expected_sop_instance=sop_instance
            )
            session.count("already present" if result.outcome is Outcome.DUPLICATE else "stored")
            session.trail.stored(
                result.study_instance_uid,
                result.sop_class_uid,
                already_held=result.outcome is Outcome.DUPLICATE,
                patient=result.patient_id,
            )
        except Exception as exc:  # the one boundary where every failure becomes a status
            failure = session.failure("C-STORE", exc, sop_instance)
            session.trail.store_failed()
            status, comment, offending = failure.status, failure.comment, failure.offending
        finally:
            if sink is not None:
                sink.discard()
        session.assoc.send_message(
            message.context_id,
            dimse.store_rsp(
                command.message_id or 0,
                sop_class,
                sop_instance,
                status,
                error_comment=comment,
                offending_elements=offending,
            ),
        )

    def _find(self, session: _Session, message: Message) -> None:
        command = message.command
        message_id = command.message_id or 0
        sop_class = command.affected_sop_class_uid or ""
        context = session.assoc.contexts[message.context_id]
        assoc = session.assoc
        session.count("find")
        batch: list[tuple[bytes, bytes | None]] = []
        try:
            session.check(Service.FIND)
            model = QR_FIND.get(sop_class)
            if model is None or context.abstract_syntax != sop_class:
                raise InvalidQuery(f"no C-FIND for {sop_class}", unsupported=True)
            query = parse_identifier(
                request_identifier(message, context.transfer_syntax),
                model,
                QueryOptions(
                    pn_case_insensitive=self.options.pn_case_insensitive,
                    relational=session.relational(sop_class),
                    combined_datetime=session.combined(sop_class),
                    max_results=self.options.max_results,
                ),
            )
            results = self.archive.find_encoded(query, self._context, context.transfer_syntax)
            pending = dimse.find_rsp(message_id, sop_class, Status.PENDING, has_dataset=True)
            size, limit = 0, 1
            try:
                for encoded in results:
                    # PS3.4 C.4.1.2.3: a C-CANCEL stops the matching between two responses.
                    if session.cancelled(message_id):
                        if batch:
                            assoc.send_messages(message.context_id, batch)
                        session.count("cancelled")
                        self._audit_find(session, message, audit.Outcome.SUCCESS)
                        assoc.send_message(
                            message.context_id, dimse.find_rsp(message_id, sop_class, Status.CANCEL)
                        )
                        return
                    batch.append((pending, encoded))
                    size += len(encoded)
                    if len(batch) >= limit or size >= _FIND_BATCH_BYTES:
                        assoc.send_messages(message.context_id, batch)
                        batch, size, limit = [], 0, min(limit * 2, _FIND_BATCH)
            finally:
                results.close()
            self._audit_find(session, message, audit.Outcome.SUCCESS)
            batch.append((dimse.find_rsp(message_id, sop_class, Status.SUCCESS), None))
            assoc.send_messages(message.context_id, batch)
        except Aborted:
            raise
        except Exception as exc:  # the one boundary where every failure becomes a status
            failure = session.failure("C-FIND", exc, sop_class)
            self._audit_find(session, message, audit.Outcome.MINOR_FAILURE)
            if batch:  # the matches before the failure
                assoc.send_messages(message.context_id, batch)
            assoc.send_message(
                message.context_id,
                dimse.find_rsp(
                    message_id,
                    sop_class,
                    failure.status,
                    error_comment=failure.comment,
                    offending_elements=failure.offending,
                ),
            )
