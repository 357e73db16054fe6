"""DIMSE event handlers: parse, one archive call, map the result or exception to a status."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from pypacs.archive import Archive
from pypacs.net.status import Status, status_for

log = logging.getLogger("pypacs.net")


@dataclass
class _AssociationLog:
    address: str
    started: float = field(default_factory=time.monotonic)
    outcome: str = "closed"
    counts: Counter[str] = field(default_factory=Counter)


class DimseHandlers:
    """The handlers bound to pypacs' application entity; one instance per server."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._associations: dict[int, _AssociationLog] = {}
        self._lock = threading.Lock()

    def bindings(self) -> list[evt.EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self.on_conn_open),
            (evt.EVT_ACCEPTED, self._outcome("accepted")),
            (evt.EVT_REJECTED, self._outcome("rejected")),
            (evt.EVT_RELEASED, self._outcome("released")),
            (evt.EVT_ABORTED, self._outcome("aborted")),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
        ]

    # -- association bookkeeping: one log line per association ---------------------------

    def on_conn_open(self, event: evt.Event) -> None:
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if sock is not None:
            # Nagle's algorithm would hold each small response back ~40 ms on loopback.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        requestor = event.assoc.requestor
        address = f"{requestor.address}:{requestor.port}"
        with self._lock:
            self._associations[id(event.assoc)] = _AssociationLog(address)

    def _outcome(self, outcome: str) -> Callable[[evt.Event], None]:
        def handler(event: evt.Event) -> None:
            entry = self._associations.get(id(event.assoc))
            if entry is not None and entry.outcome != "aborted":
                entry.outcome = outcome

        return handler

    def _count(self, event: evt.Event, what: str) -> None:
        entry = self._associations.get(id(event.assoc))
        if entry is not None:
            entry.counts[what] += 1

    def on_conn_close(self, event: evt.Event) -> None:
        with self._lock:
            entry = self._associations.pop(id(event.assoc), None)
        if entry is None:
            return
        requestor = event.assoc.requestor
        did = ", ".join(f"{n} {what}" for what, n in sorted(entry.counts.items())) or "nothing"
        log.info(
            "association from %s at %s to %s: %s; %s after %.3f s",
            (requestor.ae_title or "?").strip() if requestor else "?",
            entry.address,
            (event.assoc.acceptor.ae_title or "").strip(),
            did,
            entry.outcome,
            time.monotonic() - entry.started,
        )

    # -- services ------------------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        self._count(event, "echo")
        return int(Status.SUCCESS)

    def on_store(self, event: evt.Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        try:
            result = self.archive.store_instance(
                event.encoded_dataset(include_meta=True),
                expected_sop_class=request.AffectedSOPClassUID,
                expected_sop_instance=request.AffectedSOPInstanceUID,
            )
        except Exception as exc:  # the one boundary where every failure becomes a status
            return self._failure(event, "C-STORE", exc, request.AffectedSOPInstanceUID)
        self._count(event, "stored" if result.outcome.value != "duplicate" else "already present")
        return int(Status.SUCCESS)

    def _failure(self, event: evt.Event, service: str, exc: Exception, uid: object) -> Dataset:
        status = status_for(exc)
        self._count(event, "failed")
        calling = (event.assoc.requestor.ae_title or "?").strip()
        if status is Status.PROCESSING_FAILURE:
            log.exception("%s from %s of %s failed unexpectedly", service, calling, uid)
        else:
            log.error(
                "%s from %s of %s refused with 0x%04X: %s", service, calling, uid, status, exc
            )
        answer = Dataset()
        answer.Status = int(status)
        # ErrorComment is LO: at most 64 characters (PS3.7 C.4, PS3.5 6.2).
        answer.ErrorComment = str(exc)[:64]
        return answer
