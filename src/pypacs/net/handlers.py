"""DIMSE event handlers: parse, one archive call, map the result or exception to a status."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_STORE

from pypacs.archive import Archive, Outcome
from pypacs.errors import InvalidQuery, PypacsError
from pypacs.model.outcomes import status_for
from pypacs.model.sop import QR_FIND, QR_GET, QR_MOVE
from pypacs.model.status import Status
from pypacs.net.options import NetOptions
from pypacs.net.part10 import received_part10
from pypacs.net.reactor import nodelay
from pypacs.net.retrieve import RetrieveService
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.respond import ResponseContext
from pypacs.query.types import QueryOptions

log = logging.getLogger("pypacs.net")


@dataclass
class _AssociationLog:
    address: str
    started: float = field(default_factory=time.monotonic)
    outcome: str = "closed"
    counts: Counter[str] = field(default_factory=Counter)
    # SOP Class Extended Negotiation we accepted: SOP Class UID -> (relational, combined).
    extended: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    # Message IDs a C-CANCEL named. pynetdicom forgets a cancel that arrives before its
    # request is started, so they are kept here too.
    cancelled: set[int] = field(default_factory=set)


class DimseHandlers:
    """The handlers bound to pypacs' application entity; one instance per server."""

    def __init__(self, archive: Archive, options: NetOptions) -> None:
        self.archive = archive
        self.options = options
        self._context = ResponseContext(ae_title=options.ae_title)
        self.retrieve = RetrieveService(archive, options, self)
        self._associations: dict[int, _AssociationLog] = {}
        self._lock = threading.Lock()

    def bindings(self) -> list[evt.EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self.on_conn_open),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_SOP_EXTENDED, self.on_sop_extended),
            (evt.EVT_DIMSE_RECV, self.on_dimse_recv),
        ]

    # -- association bookkeeping: one log line per association ---------------------------

    def on_conn_open(self, event: evt.Event) -> None:
        nodelay(event)
        requestor = event.assoc.requestor
        address = f"{requestor.address}:{requestor.port}"
        with self._lock:
            self._associations[id(event.assoc)] = _AssociationLog(address)

    def count(self, assoc: Association, what: str, n: int = 1) -> None:
        entry = self._associations.get(id(assoc))
        if entry is not None:
            entry.counts[what] += n

    def cancelled(self, assoc: Association, message_id: int) -> bool:
        """Whether a C-CANCEL named ``message_id`` (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3)."""
        entry = self._associations.get(id(assoc))
        return (entry is not None and message_id in entry.cancelled) or (
            message_id in assoc.dimse.cancel_req
        )

    def relational(self, assoc: Association, sop_class: str) -> bool:
        """Whether relational queries/retrieves were negotiated for ``sop_class``."""
        entry = self._associations.get(id(assoc))
        return entry is not None and entry.extended.get(sop_class, (False, False))[0]

    def on_finished(self, assoc: Association) -> None:
        """Called by the association's own thread once it has ended: one line saying who,
        from where, what it did and how it ended (logged here, after the end, so the
        outcome is known whichever thread saw the connection close first)."""
        with self._lock:
            entry = self._associations.pop(id(assoc), None)
        if entry is None:
            return
        if assoc.is_rejected:
            outcome = "rejected"
        elif assoc.is_aborted:
            outcome = "aborted"
        elif assoc.is_released:
            outcome = "released"
        else:
            outcome = "closed without release"
        did = ", ".join(f"{n} {what}" for what, n in sorted(entry.counts.items())) or "nothing"
        log.info(
            "association from %s at %s to %s: %s; %s after %.3f s",
            (assoc.requestor.ae_title or "?").strip(),
            entry.address,
            (assoc.acceptor.ae_title or "").strip(),
            did,
            outcome,
            time.monotonic() - entry.started,
        )

    # -- services ------------------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        self.count(event.assoc, "echo")
        return int(Status.SUCCESS)

    def on_store(self, event: evt.Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        try:
            result = self.archive.store_instance(
                received_part10(request, str(event.context.transfer_syntax)),
                expected_sop_class=request.AffectedSOPClassUID,
                expected_sop_instance=request.AffectedSOPInstanceUID,
            )
        except Exception as exc:  # the one boundary where every failure becomes a status
            return self.failure(event.assoc, "C-STORE", exc, request.AffectedSOPInstanceUID)
        self.count(
            event.assoc, "already present" if result.outcome is Outcome.DUPLICATE else "stored"
        )
        return int(Status.SUCCESS)

    def on_sop_extended(self, event: evt.Event) -> dict[str, bytes]:
        """PS3.4 C.5.1.1: accept relational queries and combined date-time matching when asked;
        fuzzy person-name matching and timezone adjustment are declined."""
        entry = self._associations.get(id(event.assoc))
        accepted: dict[str, bytes] = {}
        app_info: dict[str, bytes] = getattr(event, "app_info", None) or {}
        for sop_class, info in app_info.items():
            if str(sop_class) not in QR_FIND and str(sop_class) not in QR_MOVE | QR_GET:
                continue
            relational = len(info) > 0 and info[0] == 1
            combined = len(info) > 1 and info[1] == 1 and str(sop_class) in QR_FIND
            reply = bytearray(len(info))
            if relational:
                reply[0] = 1
            if combined:
                reply[1] = 1
            accepted[str(sop_class)] = bytes(reply)
            if entry is not None:
                entry.extended[str(sop_class)] = (relational, combined)
        return accepted

    def on_dimse_recv(self, event: evt.Event) -> None:
        message = event.message
        if type(message).__name__ == "C_CANCEL_RQ":
            entry = self._associations.get(id(event.assoc))
            if entry is not None:
                entry.cancelled.add(int(message.command_set.MessageIDBeingRespondedTo))

    def on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        request = cast(C_FIND, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        entry = self._associations.get(id(event.assoc))
        relational, combined = (
            entry.extended.get(sop_class, (False, False)) if entry else (False, False)
        )
        self.count(event.assoc, "find")
        try:
            try:
                identifier = event.identifier
            except Exception as exc:
                raise InvalidQuery(f"identifier does not parse: {exc}", unsupported=True) from exc
            query = parse_identifier(
                identifier,
                QR_FIND[sop_class],
                QueryOptions(
                    pn_case_insensitive=self.options.pn_case_insensitive,
                    relational=relational,
                    combined_datetime=combined,
                    max_results=self.options.max_results,
                ),
            )
            results = self.archive.find(query, self._context)
            try:
                for identifier_out in results:
                    # PS3.4 C.4.1.2.3: a C-CANCEL stops the matching between two responses.
                    if event.is_cancelled or (
                        entry is not None and request.MessageID in entry.cancelled
                    ):
                        self.count(event.assoc, "cancelled")
                        yield int(Status.CANCEL), None
                        return
                    yield int(Status.PENDING), identifier_out
            finally:
                results.close()
        except Exception as exc:  # the one boundary where every failure becomes a status
            yield self.failure(event.assoc, "C-FIND", exc, sop_class), None

    def failure(self, assoc: Association, service: str, exc: Exception, uid: object) -> Dataset:
        """The failure response for ``exc``, logged with the calling AE title."""
        status = status_for(exc)
        self.count(assoc, "failed")
        calling = (assoc.requestor.ae_title or "?").strip()
        if status is Status.PROCESSING_FAILURE:
            log.exception("%s from %s of %s failed unexpectedly", service, calling, uid)
        else:
            log.error(
                "%s from %s of %s refused with 0x%04X: %s", service, calling, uid, status, exc
            )
        answer = Dataset()
        answer.Status = int(status)
        # ErrorComment is LO: at most 64 characters (PS3.7 C.4, PS3.5 6.2). Only our own
        # errors are told; any other text (a database's) stays in the log above.
        told = str(exc) if isinstance(exc, PypacsError) else "unexpected failure; see the log"
        answer.ErrorComment = told[:64]
        tag = getattr(exc, "tag", None)
        if tag is not None:
            answer.OffendingElement = [tag]
        return answer
