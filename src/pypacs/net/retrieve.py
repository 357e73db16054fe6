"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): the instances a request names are sent as C-STORE
sub-operations, over the request's own association (C-GET) or over one pypacs opens to the
move destination (C-MOVE).

The stored bytes go out as they are (a view of the stored file's data set) whenever the peer
accepted their transfer syntax, and are transcoded only when it did not.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pypacs import audit
from pypacs.archive import Archive, Retrieval
from pypacs.archive.retrieve import StoredInstance
from pypacs.errors import IndexUnavailable
from pypacs.model.access import Service
from pypacs.model.outcomes import Refused
from pypacs.model.sop import QR_GET, QR_MOVE
from pypacs.model.status import Status
from pypacs.net import dimse
from pypacs.net.association import Association, AssociationError, Message
from pypacs.net.identifier import encode_identifier, request_identifier
from pypacs.net.options import NetOptions
from pypacs.net.sending import Counts, StoreSender, open_sending, send_all
from pypacs.query.from_dimse import parse_retrieve
from pypacs.query.types import Query
from pypacs.remote.registry import Peer, RemoteError

log = logging.getLogger("pypacs.net")

# PS3.7 9.3.4.2 / 9.3.3.2: the sub-operation counts are US.
_MAX_SUB_OPERATIONS = dimse.MAX_COUNT


@dataclass(frozen=True)
class Failure:
    """A failure response's fields (PS3.7 C.4)."""

    status: int
    comment: str
    offending: tuple[int, ...] = ()


class Session(Protocol):
    """What the retrieve service asks of the association it serves (net/services.py)."""

    assoc: Association
    trail: audit.AssociationAudit

    def count(self, what: str, n: int = 1) -> None: ...

    def cancelled(self, message_id: int) -> bool: ...

    def relational(self, sop_class: str) -> bool: ...

    def failure(self, service: str, exc: Exception, uid: object) -> Failure: ...

    def check(self, service: Service) -> None: ...

    def other(self, message: Message) -> None: ...


class RetrieveService:
    """Serves C-MOVE and C-GET requests; one per server."""

    def __init__(
        self, archive: Archive, options: NetOptions, auditor: audit.Auditor | None = None
    ) -> None:
        self.archive = archive
        self.options = options
        self.auditor = auditor or audit.NullAuditor()
        self._outgoing = threading.BoundedSemaphore(options.max_move_associations)

    def serve(self, session: Session, message: Message) -> None:
        """Answer one request: pending responses after each sub-operation, then a final one."""
        command = message.command
        is_move = command.command_field == dimse.C_MOVE_RQ
        service = "C-MOVE" if is_move else "C-GET"
        responder = _Responder(session.assoc, message, is_move)
        session.count("move" if is_move else "get")
        sop_class = command.affected_sop_class_uid or ""
        classes: Counter[str] = Counter()  # instances offered per SOP class, when audited
        destination: Peer | None = None
        try:
            # PS3.4 C.4.2.1.4, C.4.3.1.4: Refused, Not Authorized (0x0124).
            session.check(Service.MOVE if is_move else Service.GET)
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
                if self.auditor.enabled:
                    retrieval.instances = _counted(retrieval.instances, classes)
                if retrieval.count and not self._send_all(
                    session, command, destination, retrieval, counts, responder
                ):
                    return
            session.count("sent", counts.completed + counts.warning)
            failed = audit.Outcome.MINOR_FAILURE if counts.failed else audit.Outcome.SUCCESS
            self._audit(session, responder, destination, classes, failed)
            responder.send(counts.final_status(), counts, final=True)
        except AssociationError:
            raise
        except Exception as exc:  # the one boundary where every failure becomes a status
            responder.fail(session.failure(service, exc, sop_class))
            self._audit(session, responder, destination, classes, audit.Outcome.SERIOUS_FAILURE)

    def _send_all(
        self,
        session: Session,
        command: dimse.Command,
        destination: Peer | None,
        retrieval: Retrieval,
        counts: Counts,
        responder: _Responder,
    ) -> bool:
        """The sub-operations, one instance at a time; False when cancelled (answered)."""
        # PS3.7 9.3.1.1: a C-STORE for a C-MOVE names the move's originator.
        originator = (session.assoc.calling_ae.strip(), responder.message_id)
        with self._sender(session, command, destination, retrieval.syntaxes) as sender:
            finished = send_all(
                self.archive,
                sender,
                retrieval.instances,
                counts,
                what=f"{responder.service} sub-operation",
                cancelled=lambda: session.cancelled(responder.message_id),
                # C.4.2.3.1, C.4.3.3.1: a pending response after each sub-operation, the
                # last one too (Remaining 0), as dcmqrscp does: some SCUs (GDCM's gdcmscu)
                # wait for one after every C-STORE they receive.
                on_progress=lambda: responder.send(Status.PENDING, counts, final=False),
                originator=originator if destination is not None else None,
            )
        if not finished:
            # C.4.2.3.1: Cancel with the counts so far; Remaining is what never started.
            session.count("cancelled")
            responder.send(Status.CANCEL, counts, final=False)
        return finished

    def _audit(
        self,
        session: Session,
        responder: _Responder,
        destination: Peer | None,
        classes: Counter[str],
        outcome: audit.Outcome,
    ) -> None:
        """PS3.15 A.5.3.4: the studies the request named, sent to the move destination
        (the caller requesting) or to the caller (C-GET)."""
        if not self.auditor.enabled:
            return
        try:
            identifier = responder.identifier()
        except Exception:  # an identifier that did not parse: answered already
            identifier = Dataset()
        value = identifier.get("StudyInstanceUID")
        studies = [str(v) for v in value] if isinstance(value, MultiValue) else [str(value or "")]
        # The Patient participant (PS3.15 A.5.3.4) when the identifier names the patient
        # (the Patient Root models always do); a Study Root request's patient is left out
        # rather than looked up.
        patient = str(identifier.get("PatientID") or "")
        patients = [patient] if patient and "*" not in patient and "?" not in patient else []
        caller = session.trail.calling
        if destination is None:
            self.auditor.instances_transferred(caller, studies, classes, outcome, patients=patients)
        else:
            to = audit.Who(destination.ae_title, destination.host, ae=True)
            self.auditor.instances_transferred(
                to, studies, classes, outcome, requestor=caller, patients=patients
            )

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
    def _sender(
        self,
        session: Session,
        command: dimse.Command,
        destination: Peer | None,
        syntaxes: list[tuple[str, str]],
    ) -> Iterator[StoreSender]:
        priority = command.priority or dimse.PRIORITY_MEDIUM
        timeout = self.options.dimse_timeout
        if destination is None:
            # C-GET: the sub-operations go over the request's own association; a C-CANCEL
            # read while awaiting a C-STORE-RSP is kept for the next check.
            yield StoreSender(
                session.assoc, timeout=timeout, priority=priority, on_other=session.other
            )
            return
        if not self._outgoing.acquire(timeout=self.options.acse_timeout):
            raise Refused(
                Status.UNABLE_TO_PERFORM_SUB_OPERATIONS,
                f"all {self.options.max_move_associations} outgoing associations are busy",
            )
        try:
            try:
                requestor = open_sending(self.options, destination, syntaxes)
            except RemoteError as exc:
                log.warning("association to %s failed: %s", destination, exc)
                raise Refused(Status.UNABLE_TO_PERFORM_SUB_OPERATIONS, str(exc)) from exc
            try:
                if not requestor.assoc.contexts:
                    raise Refused(
                        Status.UNABLE_TO_PERFORM_SUB_OPERATIONS,
                        f"{destination} accepted no context",
                    )
                yield StoreSender(requestor.assoc, timeout=timeout, priority=priority)
            finally:
                requestor.end(completed=True)
        finally:
            self._outgoing.release()


def _counted(
    instances: Iterator[StoredInstance], classes: Counter[str]
) -> Iterator[StoredInstance]:
    for stored in instances:
        classes[stored.sop_class_uid] += 1
        yield stored


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
        return request_identifier(self.message, self.syntax)

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
