"""Event-driven waits for pynetdicom's acceptor threads.

pynetdicom's reactors poll: the DUL thread sleeps a fixed millisecond whenever it finds
nothing to do, and the association thread sleeps a millisecond on every loop. Each C-STORE
round trip pays those sleeps several times, which caps one association at a few hundred
instances per second however fast the archive is. Here the DUL thread waits in ``select``
on its socket and on a wake-up pipe instead (so it answers the moment data arrives or a
response is queued), and the association thread blocks on its DIMSE queue, woken by the
DUL when anything reaches it. The state machine, PDUs and DIMSE are pynetdicom's, untouched.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import AssociationSocket, RequestHandler

from pypacs.net.negotiation import settle

log = logging.getLogger(__name__)

# Longest wait without an event: bounds how late timers (ARTIM, idle) are noticed.
_MAX_WAIT = 0.05
# PDUs queued for sending before the association thread waits: results stream at the
# pace of the socket, so memory stays bounded and a C-CANCEL still finds results unsent.
_SEND_QUEUE_LIMIT = 8


def nodelay(event: Any) -> None:
    """An EVT_CONN_OPEN handler: without TCP_NODELAY, Nagle's algorithm holds each small
    PDU back (about 40 ms on loopback, waiting for the peer's delayed ACK)."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PromptDUL(DULServiceProvider):
    """The DUL provider, waiting on its socket instead of sleeping."""

    def prepare(self) -> None:
        self._space = threading.Condition()
        # Whole PDUs only on the wire: the DUL thread and a sending association thread
        # take turns (see send_pdu).
        self._send_lock = threading.RLock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        if (
            isinstance(primitive, P_DATA)
            and threading.current_thread() is not self
            and self.state_machine.current_state == "Sta6"
            and self.to_provider_queue.empty()
        ):
            # PS3.8 9.2.1 DT-1: in Sta6 a P-DATA request only sends its P-DATA-TF PDU and
            # the state stays Sta6, so the association thread sends it itself (blocking
            # while the socket is full) instead of handing each PDU to the DUL thread.
            with self._send_lock:
                self._send(P_DATA_TF(primitive))
            return
        super().send_pdu(primitive)
        self.wake()
        if threading.current_thread() is self:
            return  # the DUL never waits for itself
        with self._space:
            while (
                self.to_provider_queue.qsize() > _SEND_QUEUE_LIMIT
                and not self._kill_thread
                and self.is_alive()
            ):
                self._space.wait(_MAX_WAIT)

    def _send(self, pdu: Any) -> None:
        with self._send_lock:
            super()._send(pdu)

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def _wait(self) -> None:
        transport = self.socket
        sock = transport.socket if transport is not None else None
        waitables: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0:
            waitables.append(sock)
        try:
            ready, _, _ = select.select(waitables, [], [], _MAX_WAIT)
        except (OSError, ValueError):
            time.sleep(0.001)
            return
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_r.recv(4096)

    def _notify_user(self) -> None:
        # Whatever the state machine handed to the association (a DIMSE message, a
        # release or abort), wake the association thread waiting for it. (A marker in the
        # DIMSE queue would not do: pynetdicom reads (None, None) there as a timeout.)
        wake = getattr(self.assoc, "wake", None)
        if wake is not None:
            wake.set()

    def run(self) -> None:
        # Thread.__init__ bound pynetdicom's own loop as the target; run ours instead.
        self.run_reactor()

    def run_reactor(self) -> None:
        self._idle_timer.start()
        try:
            self._loop()
        finally:
            self._notify_user()
            for end in (self._wake_r, self._wake_w):
                end.close()

    def _loop(self) -> None:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                return
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Send one queued primitive and also look at the socket, every loop: while a
                # long C-FIND streams responses out, a C-CANCEL coming in must still be read
                # (pynetdicom's loop does one or the other, so it reads only once all is sent).
                self._process_recv_primitive()
                # Sta1: the association is over and its connection closed; nothing to read.
                if self.state_machine.current_state != "Sta1" and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("DUL failure: aborting the association")
                self._hard_abort()
                return
            # Act on every event before looking again: an outgoing primitive is only peeked
            # at above, so its event must be handled before the next look, or it would be
            # announced twice.
            handled = False
            while True:
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    break
                if event == "Evt17" and self.state_machine.current_state == "Sta1":
                    continue  # the connection closing after the association ended
                self.state_machine.do_action(event)
                handled = True
            if handled:
                self._notify_user()
                with self._space:
                    self._space.notify_all()
            else:
                self._wait()

    def _hard_abort(self) -> None:
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        with contextlib.suppress(Exception):
            if self.socket is not None:
                self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class PromptAssociation(Association):
    """An acceptor association whose reactor sleeps until its DUL has news for it."""

    wake: threading.Event
    on_finished: Callable[[Association], None] | None
    on_retrieve: Callable[[Association, Any, Any], None] | None

    def prepare(
        self,
        on_finished: Callable[[Association], None] | None,
        on_retrieve: Callable[[Association, Any, Any], None] | None,
    ) -> None:
        self.wake = threading.Event()
        self.on_finished = on_finished
        self.on_retrieve = on_retrieve

    def _serve_request(self, msg: Any, context_id: int) -> None:
        # C-GET and C-MOVE go to our retrieve service (net/retrieve.py), with the checks
        # pynetdicom makes before it runs a service class.
        if isinstance(msg, C_STORE) and not self._sent_release:
            self._serve_store(msg, context_id)
            return
        serve = self.on_retrieve
        if serve is None or not isinstance(msg, C_GET | C_MOVE) or self._sent_release:
            super()._serve_request(msg, context_id)
            return
        context = self._accepted_cx.get(context_id)
        if context is None or context.abstract_syntax != msg.AffectedSOPClassUID:
            super()._serve_request(msg, context_id)  # pynetdicom aborts or refuses
            return
        self.dimse.cancel_req = {}
        self._is_paused = True
        try:
            serve(self, msg, context)
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}

    def _serve_store(self, msg: C_STORE, context_id: int) -> None:
        # Every accepted context of a C-STORE is a storage one (net/negotiation.py), also
        # for classes pynetdicom has no service class for (retired or private ones).
        context = self._accepted_cx.get(context_id)
        if context is None:
            self.abort()  # what pynetdicom does for a message on an unknown context
            return
        self.dimse.cancel_req = {}
        self._is_paused = True
        try:
            StorageServiceClass(self).SCP(msg, context)
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.on_finished is not None:
                self.on_finished(self)

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if self.dimse.peek_msg()[1] is None:
                # Clear after waking, then look: anything that arrived before the clear is
                # seen below; anything after it sets the event again.
                self.wake.wait(_MAX_WAIT)
                self.wake.clear()
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
            if self._finish_if_ended():
                return

    def _finish_if_ended(self) -> bool:
        """The checks pynetdicom's acceptor loop makes after each message."""
        if self.is_established and self.acse.is_release_requested():
            self.is_released = True
            self.acse.send_release(is_response=True)
            self.is_established = False
            from pynetdicom import evt

            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            from pynetdicom import evt

            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            log.error("network timeout reached: aborting the association")
            self.abort()
            self.kill()
            return True
        return False


class SharedContexts(list[Any]):
    """The acceptor's presentation contexts, shared by every association.

    pynetdicom deep-copies them for each association (a few milliseconds for ~150 storage
    SOP classes), but negotiation only reads them and builds new result contexts.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


@dataclass(frozen=True)
class Negotiation:
    """What the acceptor knows for settling its contexts (net/negotiation.py)."""

    storage_classes: frozenset[str]
    accept_unknown: bool


class PromptACSE(ACSE):
    """pynetdicom's ACSE, whose accepted contexts are settled (net/negotiation.py) before
    the A-ASSOCIATE-AC goes out."""

    def __init__(self, assoc: Association, negotiation: Negotiation | None) -> None:
        super().__init__(assoc)
        self.negotiation = negotiation

    def send_accept(self) -> None:
        if self.negotiation is not None:
            settle(
                self,
                self.negotiation.storage_classes,
                accept_unknown=self.negotiation.accept_unknown,
            )
        super().send_accept()


class PromptRequestHandler(RequestHandler):
    """Creates acceptor associations that use the prompt reactors above."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # The objects are pynetdicom's, already configured; only their wait loops change.
        assoc.__class__ = PromptAssociation
        assoc.prepare(  # type: ignore[attr-defined]
            getattr(self.server, "on_association_finished", None),
            getattr(self.server, "on_retrieve", None),
        )
        assoc.dul.__class__ = PromptDUL
        assoc.dul.prepare()  # type: ignore[attr-defined]
        # A new ACSE of our own class: pynetdicom's holds nothing but its association.
        assoc.acse = PromptACSE(assoc, getattr(self.server, "negotiation", None))
        return assoc


class PromptAE(AE):
    """An AE whose requestor associations (C-MOVE to a destination) use the prompt DUL."""

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> AssociationSocket:
        # Called before the association starts its DUL thread: swap the DUL's loop now.
        assoc.dul.__class__ = PromptDUL
        assoc.dul.prepare()  # type: ignore[attr-defined]
        return super()._create_socket(assoc, address, tls_args)
