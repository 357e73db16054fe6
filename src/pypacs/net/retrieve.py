"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): the instances a request names are sent as C-STORE
sub-operations, over the request's own association (C-GET) or over one pypacs opens to the
move destination (C-MOVE).

pynetdicom's own C-GET/C-MOVE service wants every instance as a decoded Dataset, which it
encodes again; here the stored bytes go out as they are whenever the peer accepted their
transfer syntax, and are transcoded only when it did not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from pypacs.archive import Archive, Retrieval, StoredInstance
from pypacs.errors import IndexUnavailable, PypacsError
from pypacs.model.outcomes import Refused
from pypacs.model.sop import QR_GET, QR_MOVE
from pypacs.model.status import Status
from pypacs.net.options import NetOptions
from pypacs.net.reactor import PromptAE, nodelay
from pypacs.query.from_dimse import parse_retrieve
from pypacs.query.types import InvalidQuery, Query
from pypacs.remote.registry import Peer

log = logging.getLogger("pypacs.net")

# PS3.7 9.3.4.2 / 9.3.3.2: the sub-operation counts are US.
_MAX_SUB_OPERATIONS = 0xFFFF
# PS3.8 9.3.2: at most 128 presentation contexts (odd IDs 1-255) in one association.
_MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class Bookkeeping(Protocol):
    """What the retrieve service asks of the handlers that own per-association state."""

    def count(self, assoc: Association, what: str, n: int = 1) -> None: ...

    def cancelled(self, assoc: Association, message_id: int) -> bool: ...

    def relational(self, assoc: Association, sop_class: str) -> bool: ...

    def failure(self, assoc: Association, service: str, exc: Exception, uid: object) -> Dataset: ...


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
    """An association over which pypacs is the C-STORE SCU for a retrieve's sub-operations."""

    def __init__(
        self,
        archive: Archive,
        assoc: Association,
        *,
        priority: int,
        originator: tuple[str, int] | None,
        timeout: float,
    ) -> None:
        self.archive = archive
        self.assoc = assoc
        self.priority = priority
        self.originator = originator
        self.timeout = timeout
        self._message_id = 0
        # SOP Class UID → accepted transfer syntax → presentation context ID; only contexts
        # where we may act as SCU (for C-GET, through SCP/SCU role selection, PS3.7 D.3.3.4).
        self.contexts: dict[str, dict[str, int]] = {}
        for cx in assoc.accepted_contexts:
            if cx.as_scu and cx.abstract_syntax and cx.context_id is not None:
                by_syntax = self.contexts.setdefault(str(cx.abstract_syntax), {})
                by_syntax.setdefault(str(cx.transfer_syntax[0]), cx.context_id)

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
        req = C_STORE()
        req.MessageID = self._message_id
        req.AffectedSOPClassUID = stored.sop_class_uid
        req.AffectedSOPInstanceUID = stored.sop_instance_uid
        req.Priority = self.priority
        if self.originator is not None:
            # PS3.7 9.3.1.1: a C-STORE for a C-MOVE names the move's originator.
            req.MoveOriginatorApplicationEntityTitle = self.originator[0]
            req.MoveOriginatorMessageID = self.originator[1]
        req.DataSet = BytesIO(payload)
        self.assoc.dimse.send_msg(req, context_id)
        deadline = time.monotonic() + self.timeout
        while self.assoc.is_established:
            _, rsp = self.assoc.dimse.get_msg(block=True)
            if isinstance(rsp, C_STORE) and rsp.MessageIDBeingRespondedTo == req.MessageID:
                status = int(rsp.Status) if rsp.Status is not None else Status.CANNOT_UNDERSTAND
                if status == Status.SUCCESS:
                    return Status.SUCCESS, ""
                if status >> 12 == 0xB:  # PS3.4 B.2.3: 0xBxxx are warnings
                    return Status.SUB_OPERATIONS_WARNING, f"warning 0x{status:04X}"
                return None, f"the peer answered 0x{status:04X}"
            if rsp is None and time.monotonic() >= deadline:
                self.assoc.abort()
                return None, f"no C-STORE response within {self.timeout:.0f} s"
        return None, "the association ended"


def _encode(ds: Dataset, syntax: str) -> bytes:
    ts = UID(syntax)
    encoded = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if encoded is None:
        raise PypacsError(f"cannot encode the transcoded data set as {ts.name}")
    return encoded


def move_contexts(syntaxes: list[tuple[str, str]]) -> list[PresentationContext]:
    """What a C-MOVE proposes to its destination: each stored (SOP class, transfer syntax)
    as a context of its own, so that the peer can take each as stored, and per SOP class
    one uncompressed context to fall back to."""
    classes = sorted({sop_class for sop_class, _ in syntaxes})
    fallbacks = [build_context(c, list(_UNCOMPRESSED)) for c in classes]
    exact = [build_context(c, [ts]) for c, ts in sorted(set(syntaxes))]
    # Past 128 contexts the exact ones are left out first: through the fallbacks every
    # SOP class still reaches the peer, transcoded.
    return (fallbacks + exact)[:_MAX_CONTEXTS]


class RetrieveService:
    """Serves C-MOVE and C-GET requests; one per server."""

    def __init__(self, archive: Archive, options: NetOptions, books: Bookkeeping) -> None:
        self.archive = archive
        self.options = options
        self.books = books
        self._outgoing = threading.BoundedSemaphore(options.max_move_associations)

    def serve(self, assoc: Association, req: C_GET | C_MOVE, context: PresentationContext) -> None:
        """Answer one request: pending responses after each sub-operation, then a final one."""
        is_move = isinstance(req, C_MOVE)
        service = "C-MOVE" if is_move else "C-GET"
        responder = _Responder(assoc, req, context)
        self.books.count(assoc, "move" if is_move else "get")
        try:
            self._check_caller(assoc)
            models = QR_MOVE if is_move else QR_GET
            sop_class = str(req.AffectedSOPClassUID)
            query = parse_retrieve(
                responder.identifier(),
                models[sop_class],
                relational=self.books.relational(assoc, sop_class),
            )
            destination = self._destination(cast(C_MOVE, req)) if is_move else None
            with self._located(query) as retrieval:
                counts = Counts(retrieval.count)
                if retrieval.count:
                    with self._channel(assoc, req, destination, retrieval.syntaxes) as channel:
                        if not self._send_all(channel, retrieval, counts, responder, service):
                            return
            self.books.count(assoc, "sent", counts.completed + counts.warning)
            responder.send(counts.final_status(), counts, final=True)
        except Exception as exc:  # the one boundary where every failure becomes a status
            responder.fail(self.books.failure(assoc, service, exc, req.AffectedSOPClassUID))

    def _send_all(
        self,
        channel: StoreChannel,
        retrieval: Retrieval,
        counts: Counts,
        responder: _Responder,
        service: str,
    ) -> bool:
        """The sub-operations, one instance at a time; False when cancelled (answered)."""
        assoc, message_id = responder.assoc, int(responder.req.MessageID or 0)
        for stored in retrieval.instances:
            if self.books.cancelled(assoc, message_id):
                # C.4.2.3.1: Cancel with the counts so far; Remaining is what never started.
                self.books.count(assoc, "cancelled")
                responder.send(Status.CANCEL, counts, final=False)
                return False
            outcome, why = channel.send(stored)
            counts.add(outcome, stored.sop_instance_uid)
            if outcome is None:
                log.error(
                    "%s sub-operation for %s failed: %s", service, stored.sop_instance_uid, why
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
        calling = (assoc.requestor.ae_title or "").strip()
        if allowed and calling not in allowed:
            raise Refused(Status.NOT_AUTHORIZED, f"{calling!r} may not retrieve")

    def _destination(self, req: C_MOVE) -> Peer:
        title = str(req.MoveDestination or "").strip()
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
        assoc: Association,
        req: C_GET | C_MOVE,
        destination: Peer | None,
        syntaxes: list[tuple[str, str]],
    ) -> Iterator[StoreChannel]:
        priority = req.Priority or 0
        if destination is None:
            # C-GET: the sub-operations go over the request's own association.
            yield StoreChannel(
                self.archive,
                assoc,
                priority=priority,
                originator=None,
                timeout=self.options.dimse_timeout,
            )
            return
        if not self._outgoing.acquire(timeout=self.options.acse_timeout):
            raise Refused(
                Status.UNABLE_TO_PERFORM_SUB_OPERATIONS,
                f"all {self.options.max_move_associations} outgoing associations are busy",
            )
        try:
            out = open_store_association(self.options, destination, syntaxes)
            originator = ((assoc.requestor.ae_title or "").strip(), req.MessageID or 0)
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


def open_store_association(
    options: NetOptions, peer: Peer, syntaxes: list[tuple[str, str]]
) -> Association:
    """An association to ``peer`` proposing ``move_contexts(syntaxes)``, on which the
    calling thread sends C-STOREs through a ``StoreChannel``; end it with
    ``end_store_association``.

    Raises:
        Refused: UNABLE_TO_PERFORM_SUB_OPERATIONS, the peer refused or did not answer.
    """
    ae = PromptAE(ae_title=options.ae_title)
    ae.acse_timeout = options.acse_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.network_timeout = options.network_timeout
    ae.maximum_pdu_size = options.max_pdu_size
    out = ae.associate(
        peer.host,
        peer.port,
        contexts=move_contexts(syntaxes),
        ae_title=peer.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)],
    )
    if not out.is_established:
        raise Refused(Status.UNABLE_TO_PERFORM_SUB_OPERATIONS, f"{peer} refused or did not answer")
    # Our thread reads the destination's responses itself: pynetdicom's requestor
    # reactor must not take them off the queue first (what its send_c_store does too).
    out._reactor_checkpoint.clear()
    while not out._is_paused and out.is_established:
        time.sleep(0.0001)
    return out


def end_store_association(out: Association) -> None:
    """Release an association ``open_store_association`` made."""
    out._reactor_checkpoint.set()
    if out.is_established:
        out.release()


class _Responder:
    """Builds and sends the C-GET/C-MOVE responses of one request."""

    def __init__(
        self, assoc: Association, req: C_GET | C_MOVE, context: PresentationContext
    ) -> None:
        self.assoc = assoc
        self.req = req
        self.syntax = UID(str(context.transfer_syntax[0]))
        self.context_id = cast(int, context.context_id)
        self.rsp = C_MOVE() if isinstance(req, C_MOVE) else C_GET()
        self.rsp.MessageIDBeingRespondedTo = req.MessageID
        self.rsp.AffectedSOPClassUID = req.AffectedSOPClassUID

    def identifier(self) -> Dataset:
        ts = self.syntax
        try:
            return decode(
                cast(BytesIO, self.req.Identifier),
                ts.is_implicit_VR,
                ts.is_little_endian,
                ts.is_deflated,
            )
        except Exception as exc:
            raise InvalidQuery(f"identifier does not parse: {exc}", unsupported=True) from exc

    def send(self, status: Status, counts: Counts, *, final: bool) -> None:
        rsp = self.rsp
        rsp.Status = int(status)
        rsp.Identifier = None
        # PS3.7 9.3.3.2, 9.3.4.2: no Remaining count in a final response.
        rsp.NumberOfRemainingSuboperations = None if final else counts.remaining
        rsp.NumberOfCompletedSuboperations = counts.completed
        rsp.NumberOfFailedSuboperations = counts.failed
        rsp.NumberOfWarningSuboperations = counts.warning
        if counts.failed_uids and status is not Status.PENDING:
            # C.4.2.1.6 / C.4.3.1.5: the failed instances, in the response identifier.
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = counts.failed_uids
            rsp.Identifier = BytesIO(_encode(failed, self.syntax))
        self.assoc.dimse.send_msg(rsp, self.context_id)

    def fail(self, answer: Dataset) -> None:
        rsp = self.rsp
        rsp.Status = int(answer.Status)
        rsp.ErrorComment = answer.ErrorComment
        if "OffendingElement" in answer:
            rsp.OffendingElement = answer.OffendingElement
        rsp.Identifier = None
        if self.assoc.is_established:
            self.assoc.dimse.send_msg(rsp, self.context_id)
