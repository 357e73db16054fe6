"""The listening side: one thread per connection, negotiation as acceptor, and the caps.

Connections still negotiating are capped in all and per peer address; when a cap is reached
the *oldest* negotiating connection is closed to make room, so that silent sockets can never
keep a real peer out. Established associations are capped by ``max_associations``: one more
gets A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded (PS3.8 9.3.4) once its RQ is read.
The services plug in as two callables: ``decide(rq, peer) -> Decision`` (see ``negotiate``)
and ``on_association(assoc)``, run in the association's thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pypacs.net import pdu
from pypacs.net.association import (
    MAX_ASSOCIATE_PDU,
    MIN_PEER_MAX_PDU,
    Association,
    AssociationError,
    Decision,
    Identity,
    State,
    Timeouts,
    rejection,
)
from pypacs.net.transport import Connection, PduTooLong, TimedOut, TransportError

log = logging.getLogger(__name__)

_SHARED_ACCEPT_POLL = 0.5  # seconds between two looks at ``stop`` on a shared socket

Peer = tuple[str, int]
Decide = Callable[[pdu.AssociateRQ, Peer], Decision]
# Told of each A-ASSOCIATE-RQ answered A-ASSOCIATE-RJ (the audit trail's security alert).
OnReject = Callable[[pdu.AssociateRQ, Peer, pdu.AssociateRJ], None]
OnAssociation = Callable[[Association], None]


@dataclass(frozen=True)
class Limits:
    """How many connections at once: associated, still negotiating, negotiating per address."""

    max_associations: int = 64
    max_negotiating: int = 32
    max_negotiating_per_address: int = 8


@dataclass(frozen=True)
class Offer:
    """What we support for one abstract syntax, and in which roles (PS3.7 D.3.3.4).

    ``scp``: we serve it (the requestor is SCU). ``scu``: we may invoke it when the
    requestor proposes the SCP role (C-GET's storage sub-operations). ``choose`` picks the
    transfer syntax of a context we send over (default: the requestor's first that we
    support, or with ``preference`` our first that the requestor proposed); ``extended``
    answers SOP Class Extended Negotiation (PS3.7 D.3.3.5).
    """

    transfer_syntaxes: frozenset[str]
    scp: bool = True
    scu: bool = False
    choose: Callable[[Sequence[str]], str | None] | None = None
    extended: Callable[[bytes], bytes | None] | None = None
    preference: tuple[str, ...] = ()


def negotiate(rq: pdu.AssociateRQ, offers: Mapping[str, Offer]) -> Decision:
    """Answer each proposed context (PS3.8 9.3.3.2), the role selections and the
    extended negotiations from ``offers``."""
    asked = {r.sop_class: r for r in rq.user.roles}
    answers: list[pdu.PresentationContextAC] = []
    roles: dict[str, pdu.RoleSelection] = {}
    for cx in rq.contexts:
        offer = offers.get(cx.abstract_syntax)
        if offer is None:
            answers.append(
                pdu.PresentationContextAC(cx.id, pdu.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, "")
            )
            continue
        role = asked.get(cx.abstract_syntax)
        rq_scu, rq_scp = (role.scu and offer.scp, role.scp and offer.scu) if role else (True, False)
        if role is not None:
            roles[cx.abstract_syntax] = pdu.RoleSelection(cx.abstract_syntax, rq_scu, rq_scp)
        if not (rq_scu or rq_scp) or (role is None and not offer.scp):
            answers.append(pdu.PresentationContextAC(cx.id, pdu.PC_USER_REJECTION, ""))
            continue
        # A context we send over takes ``choose``'s pick; where it has none (say, only a
        # lossy syntax proposed), the usual choice: instances stored in it go as stored.
        syntax = offer.choose(cx.transfer_syntaxes) if rq_scp and offer.choose else None
        if syntax is None and offer.preference:
            syntax = next((s for s in offer.preference if s in cx.transfer_syntaxes), None)
        elif syntax is None:
            syntax = next((s for s in cx.transfer_syntaxes if s in offer.transfer_syntaxes), None)
        if syntax is None:
            answers.append(
                pdu.PresentationContextAC(cx.id, pdu.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, "")
            )
        else:
            answers.append(pdu.PresentationContextAC(cx.id, pdu.PC_ACCEPTANCE, syntax))
    extended: list[pdu.ExtendedNegotiation] = []
    for item in rq.user.extended:
        offer = offers.get(item.sop_class)
        answer = offer.extended(item.info) if offer and offer.extended else None
        if answer is not None:
            extended.append(pdu.ExtendedNegotiation(item.sop_class, answer))
    return Decision(tuple(answers), tuple(roles.values()), tuple(extended))


def query_retrieve_extended(find: bool) -> Callable[[bytes], bytes | None]:
    """PS3.4 C.5.1.1: relational queries/retrieves accepted when asked, combined date-time
    matching too for C-FIND; fuzzy matching and timezone adjustment declined."""

    def answer(info: bytes) -> bytes | None:
        if not info:
            return None
        reply = bytearray(len(info))
        reply[0] = 1 if info[0] == 1 else 0
        if find and len(info) > 1 and info[1] == 1:
            reply[1] = 1
        return bytes(reply)

    return answer


def _precheck(rq: pdu.AssociateRQ) -> Decision | None:
    """The rejections PS3.8 itself calls for (Table 9-21), before the services decide."""
    if not rq.protocol_version & 1:  # PS3.8 9.3.2: bit 0, version 1
        return rejection(
            pdu.RJ_PERMANENT, pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED
        )
    if rq.application_context != pdu.DICOM_APPLICATION_CONTEXT:
        return rejection(
            pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED
        )
    if not rq.contexts:
        return rejection(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON)
    length = rq.user.max_length
    if length is not None and 0 < length < MIN_PEER_MAX_PDU:
        return rejection(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON)
    return None


def handshake(
    conn: Connection,
    decide: Decide,
    identity: Identity,
    timeouts: Timeouts,
    admit: Callable[[], bool] = lambda: True,
    on_reject: OnReject = lambda _rq, _peer, _rj: None,
) -> Association | None:
    """Sta2 to Sta6: read the A-ASSOCIATE-RQ within ARTIM, answer AC or RJ.

    ``admit`` is asked last and answers False when no association may start now (then
    A-ASSOCIATE-RJ transient, local limit exceeded). None when no association resulted.
    """
    try:
        pdu_type, body = conn.read_pdu(
            MAX_ASSOCIATE_PDU, time.monotonic() + timeouts.artim, timeouts.pdu_read
        )
        if pdu_type == pdu.ABORT:
            conn.close()  # AA-2
            return None
        if pdu_type != pdu.ASSOCIATE_RQ:
            known = pdu.ASSOCIATE_RQ <= pdu_type <= pdu.ABORT
            reason = pdu.ABORT_UNEXPECTED_PDU if known else pdu.ABORT_UNRECOGNIZED_PDU
            raise pdu.PduError(f"PDU type {pdu_type} before an A-ASSOCIATE-RQ", reason)
        rq = pdu.decode(pdu_type, body)
        assert isinstance(rq, pdu.AssociateRQ)
    except TimedOut as exc:
        if conn.bytes_received:
            _abort(conn, timeouts, pdu.ABORT_NOT_SPECIFIED, exc)
        conn.close()  # ARTIM expired in Sta2: AA-2, close without a word
        return None
    except PduTooLong as exc:
        _abort(conn, timeouts, pdu.ABORT_INVALID_PARAMETER_VALUE, exc)
        return None
    except pdu.PduError as exc:
        _abort(conn, timeouts, exc.abort_reason, exc)
        return None
    except TransportError:
        conn.close()
        return None
    decision = _precheck(rq)
    if decision is None:
        decision = decide(rq, conn.peer)
    if decision.reject is None and not admit():
        decision = rejection(
            pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION, pdu.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED
        )
    if decision.reject is not None:
        rj = decision.reject
        log.info("%s from %s rejected: %s/%s/%s", rq.calling_ae, conn.peer[0], *_codes(rj))
        on_reject(rq, conn.peer, rj)
        with contextlib.suppress(TransportError):
            conn.send([pdu.encode(rj)])
            conn.drain_until_closed(time.monotonic() + timeouts.artim)  # Sta13
        conn.close()
        return None
    ac = pdu.AssociateAC(
        called_ae=rq.called_ae,
        calling_ae=rq.calling_ae,
        contexts=decision.contexts,
        user=pdu.UserInformation(
            max_length=identity.max_pdu,
            implementation_class_uid=identity.implementation_class_uid,
            implementation_version_name=identity.implementation_version_name,
            async_ops=(1, 1) if rq.user.async_ops is not None else None,  # PS3.7 D.3.3.3
            roles=decision.roles,
            extended=decision.extended,
            identity_ac=decision.identity,
        ),
    )
    try:
        conn.send([pdu.encode(ac)])
    except TransportError:
        conn.close()
        return None
    return Association(
        conn, requestor=False, rq=rq, ac=ac, timeouts=timeouts, max_pdu=identity.max_pdu
    )


def _tls_reason(exc: Exception) -> str:
    """What OpenSSL said, without its library codes (a peer's closing counts too)."""
    if isinstance(exc, ssl.SSLError):
        return (
            exc.verify_message
            if isinstance(exc, ssl.SSLCertVerificationError)
            else (exc.reason or str(exc))
        )
    return str(exc) or type(exc).__name__


def _codes(rj: pdu.AssociateRJ) -> tuple[int, int, int]:
    return rj.result, rj.source, rj.reason


def _abort(conn: Connection, timeouts: Timeouts, reason: int, exc: Exception) -> None:
    """AA-1/AA-8 before association: A-ABORT (provider), then the close within ARTIM."""
    log.warning("connection from %s aborted: %s", conn.peer[0], exc)
    with contextlib.suppress(TransportError):
        conn.send([pdu.encode(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason))])
        conn.drain_until_closed(time.monotonic() + timeouts.artim)
    conn.close()


class Acceptor:
    """Listens on one address; each connection gets a thread that negotiates, then runs
    ``on_association`` until it returns (the association is then aborted if still open).

    ``sock``: an already bound and listening socket to accept on instead of binding
    ``host:port`` (several worker processes share one); it is the caller's to close.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        *,
        decide: Decide,
        on_association: OnAssociation,
        identity: Identity,
        timeouts: Timeouts,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
        on_reject: OnReject = lambda _rq, _peer, _rj: None,
    ) -> None:
        self.decide = decide
        self.on_reject = on_reject
        self.on_association = on_association
        self.identity = identity
        self.timeouts = timeouts
        self.limits = limits
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._negotiating: OrderedDict[int, tuple[str, socket.socket]] = OrderedDict()
        self._established = 0
        self._next_id = 0
        self._stopping = threading.Event()
        self._owns_socket = sock is None
        if sock is None:
            sock = socket.create_server((host, port), backlog=128)
        else:
            # A shared socket is not shut down on stop (that would stop every process's
            # accept): accept wakes up this often to see whether to stop.
            sock.settimeout(_SHARED_ACCEPT_POLL)
        self._sock = sock
        self._thread: threading.Thread | None = None
        self._workers = _Workers("pypacs-dicom")

    @property
    def address(self) -> Peer:
        """The bound address (port 0 picked a free one)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def negotiating(self) -> int:
        """Connections that have not yet become associations."""
        with self._lock:
            return len(self._negotiating)

    @property
    def established(self) -> int:
        """Associations open now."""
        with self._lock:
            return self._established

    def start(self) -> None:
        """Accept connections in a background thread."""
        self._thread = threading.Thread(target=self.serve, name="pypacs-dicom-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting (open associations finish in their own threads)."""
        self._stopping.set()
        if self._owns_socket:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve(self) -> None:
        """Accept until ``stop``."""
        while not self._stopping.is_set():
            try:
                sock, address = self._sock.accept()
            except TimeoutError:
                continue  # a shared socket's poll, or another process took the connection
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # EMFILE and the like: let descriptors free up
                continue
            key = self._register(sock, address[0])
            self._workers.run(self._connection, sock, key)

    def _register(self, sock: socket.socket, address: str) -> int:
        """Count a new negotiating connection, evicting the oldest beyond a cap."""
        with self._lock:
            key = self._next_id
            self._next_id += 1
            same = [k for k, (a, _) in self._negotiating.items() if a == address]
            if len(same) >= self.limits.max_negotiating_per_address:
                self._evict(same[0])
            elif len(self._negotiating) >= self.limits.max_negotiating:
                self._evict(next(iter(self._negotiating)))
            self._negotiating[key] = (address, sock)
            return key

    def _evict(self, key: int) -> None:
        """Close a negotiating connection's socket under its thread (lock held)."""
        address, sock = self._negotiating.pop(key)
        log.info("connection from %s closed: too many negotiating", address)
        with contextlib.suppress(OSError):
            # The plain socket's shutdown even for a TLS one: its thread, blocked in the
            # handshake or in a read, sees the end at once.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _tls_handshake(self, sock: socket.socket, key: int) -> socket.socket:
        """The TLS handshake, in the connection's own thread, while it counts as
        negotiating (so the caps can evict it) and within ARTIM (a socket timeout bounds
        a whole handshake); a failure is logged with the peer's address and the reason.

        Raises:
            OSError: the handshake failed, timed out or the connection was evicted.
        """
        assert self.ssl_context is not None
        address = sock.getpeername()[0] if sock.fileno() >= 0 else "?"
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            if key not in self._negotiating:  # evicted meanwhile
                tls.close()
                raise OSError("evicted before its TLS handshake")
            self._negotiating[key] = (self._negotiating[key][0], tls)
        tls.settimeout(self.timeouts.artim)
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else _tls_reason(exc)
            log.warning("TLS handshake with %s failed: %s", address, reason)
            tls.close()
            raise
        return tls

    def _admit(self) -> bool:
        with self._lock:
            if self._established >= self.limits.max_associations:
                return False
            self._established += 1
            return True

    def _connection(self, sock: socket.socket, key: int) -> None:
        assoc: Association | None = None
        try:
            if self.ssl_context is not None:
                sock = self._tls_handshake(sock, key)
            conn = Connection(sock, write_timeout=self.timeouts.pdu_read)
            assoc = handshake(
                conn, self.decide, self.identity, self.timeouts, self._admit, self.on_reject
            )
        except (OSError, ValueError) as exc:
            log.info("connection failed before association: %s", exc)
            sock.close()
        finally:
            with self._lock:
                self._negotiating.pop(key, None)
        if assoc is None:
            return
        try:
            self.on_association(assoc)
        except AssociationError as exc:
            log.info("%s: %s", assoc.calling_ae, exc)
        except Exception:
            log.exception("association with %s failed", assoc.calling_ae)
        finally:
            if assoc.state is not State.CLOSED:
                assoc.abort()
            with self._lock:
                self._established -= 1


class _Workers:
    """Threads for connections, one each; a thread whose connection ended waits a while for
    the next one (at most ``keep`` wait at once), since handing a connection to a waiting
    thread costs a fraction of starting one."""

    def __init__(self, name: str, keep: int = 8, idle_seconds: float = 60.0) -> None:
        self._name = name
        self._keep = keep
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]]] = []

    def run(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` in a thread of its own: a waiting one, or a new one."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is not None:
            inbox.put((fn, args))
            return
        threading.Thread(target=self._loop, args=(fn, args), name=self._name, daemon=True).start()

    def _loop(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        inbox: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        while True:
            try:
                fn(*args)
            except Exception:  # a connection's own failure: logged, the thread goes on
                log.exception("connection thread failed")
            with self._lock:
                if len(self._idle) >= self._keep:
                    return
                self._idle.append(inbox)
            try:
                fn, args = inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody took it: this thread ends
                        self._idle.remove(inbox)
                        return
                fn, args = inbox.get()  # taken just now: its connection is on the way
