"""One association over one connection: the PS3.8 9.2 state machine, acceptor and requestor.

Timers (PS3.8 9.1.5 and ours): ARTIM bounds the wait for the A-ASSOCIATE-RQ, for the
A-ASSOCIATE-AC/RJ, for the A-RELEASE-RP and for the peer's close after we released or
aborted; ``pdu_read`` bounds the rest of a PDU once its first byte came; ``dimse_idle`` bounds
the silence between two messages of an established association. Every failure ends as an
A-ASSOCIATE-RJ, an A-ABORT or a closed socket, and raises AssociationError to the caller.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pypacs.errors import PypacsError
from pypacs.net import dimse, pdata, pdu
from pypacs.net.transport import Buffer, Connection, PduTooLong, TimedOut, TransportError

log = logging.getLogger(__name__)

# Our bound on the A-ASSOCIATE PDUs, which come before any length is negotiated: 128
# contexts of 64-character UIDs with a dozen transfer syntaxes each fit in 128 KiB.
MAX_ASSOCIATE_PDU = 256 * 1024
# The smallest Maximum Length Received we accept from a peer. PS3.8 D.1 sets no floor;
# under 8 bytes a PDV carries nothing, and a few hundred make every message a storm of
# PDUs. DCMTK's own floor is 4096; 1024 stays well below any implementation we know.
MIN_PEER_MAX_PDU = 1024
_CONTROL_PDUS = 64  # the longest A-RELEASE / A-ABORT / A-ASSOCIATE-RJ body we read (they are 4)


class State(enum.Enum):
    """The states of PS3.8 Table 9-10 this implementation passes through."""

    AWAITING_RQ = "Sta2"
    AWAITING_AC = "Sta5"
    ESTABLISHED = "Sta6"
    RELEASE_ASKED = "Sta8"  # the peer's A-RELEASE-RQ came while a request was under way
    AWAITING_RELEASE_RP = "Sta7"
    CLOSED = "Sta1"


@dataclass(frozen=True)
class Timeouts:
    """Seconds: ARTIM (PS3.8 9.1.5), rest of a PDU, silence between messages."""

    artim: float = 30.0
    pdu_read: float = 30.0
    dimse_idle: float = 300.0


class AssociationError(PypacsError):
    """The association could not be made, or ended other than by an orderly release."""


class Rejected(AssociationError):
    """The acceptor answered A-ASSOCIATE-RJ (PS3.8 9.3.4)."""

    def __init__(self, rj: pdu.AssociateRJ) -> None:
        super().__init__(
            f"association rejected: result {rj.result} source {rj.source} reason {rj.reason}"
        )
        self.rj = rj


class Aborted(AssociationError):
    """A-ABORT sent or received, or the connection lost (A-P-ABORT)."""

    def __init__(
        self, message: str, source: int = pdu.ABORT_SOURCE_PROVIDER, reason: int = 0
    ) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Context:
    """An accepted presentation context and the roles *we* may play over it (PS3.7 D.3.3.4)."""

    id: int
    abstract_syntax: str
    transfer_syntax: str
    scu: bool
    scp: bool


@dataclass
class Counters:
    """What one association carried."""

    pdus_received: int = 0
    pdus_sent: int = 0
    messages_received: int = 0
    messages_sent: int = 0


@dataclass(frozen=True)
class Message:
    """A received DIMSE message: its command, and its data set when one came (``dataset``
    when it went to the default in-memory sink, ``sink`` in every case)."""

    context_id: int
    command: dimse.Command
    dataset: bytes | None
    sink: pdata.Sink | None = None


# Picks where a data set goes, given its command and its presentation context id.
SinkFactory = Callable[[dimse.Command, int], pdata.Sink]
# Our bound on a data set kept in memory (identifiers, responses): C-STORE data sets go to
# a sink of the caller's, bounded by [storage] max_instance_bytes.
MAX_MEMORY_DATASET = 16 * 1024 * 1024


@dataclass(frozen=True)
class Decision:
    """The acceptor's answer to an A-ASSOCIATE-RQ: the contexts answered, the role and
    extended negotiation replies; or a rejection (then nothing else counts)."""

    contexts: tuple[pdu.PresentationContextAC, ...] = ()
    roles: tuple[pdu.RoleSelection, ...] = ()
    extended: tuple[pdu.ExtendedNegotiation, ...] = ()
    identity: pdu.UserIdentityAC | None = None
    reject: pdu.AssociateRJ | None = None


def rejection(result: int, source: int, reason: int) -> Decision:
    """A Decision that rejects with these PS3.8 Table 9-21 codes."""
    return Decision(reject=pdu.AssociateRJ(result, source, reason))


@dataclass(frozen=True)
class Identity:
    """What we tell peers about ourselves (PS3.7 D.3.3.2, D.3.3.3)."""

    max_pdu: int
    implementation_class_uid: str
    implementation_version_name: str | None = None


class Association:
    """An established association; one thread uses it at a time."""

    def __init__(
        self,
        conn: Connection,
        *,
        requestor: bool,
        rq: pdu.AssociateRQ,
        ac: pdu.AssociateAC,
        timeouts: Timeouts,
        max_pdu: int,
    ) -> None:
        self.conn = conn
        self.is_requestor = requestor
        self.rq = rq
        self.ac = ac
        self.timeouts = timeouts
        self.max_pdu = max_pdu  # the longest P-DATA-TF variable field we take
        peer_user = ac.user if requestor else rq.user
        self.peer_max_pdu = peer_user.max_length or 0  # 0: no limit (PS3.8 D.1.1)
        self.contexts = _contexts(rq, ac, requestor)
        self.counters = Counters()
        self.state = State.ESTABLISHED
        self.started = time.monotonic()
        self._pending: list[pdu.PDV] = []  # PDVs read past the last message returned
        self._sinks: SinkFactory | None = None
        self._assembler = pdata.Assembler(self._start_dataset)

    @property
    def calling_ae(self) -> str:
        return self.rq.calling_ae

    @property
    def called_ae(self) -> str:
        return self.rq.called_ae

    @property
    def peer(self) -> tuple[str, int]:
        return self.conn.peer

    # -- data --

    def next_pdata(self, wait: float | None = None) -> pdu.PDataTF | None:
        """The next P-DATA-TF, its PDVs viewing the receive buffer until the next call.

        Waits at most ``wait`` seconds (default: the DIMSE idle timeout; 0: only what has
        arrived) and returns None if nothing came by then; an A-RELEASE-RQ is answered and
        returns None with ``state`` CLOSED. When ``wait`` is given (a poll while a request
        is under way, e.g. for a C-CANCEL) the A-RELEASE-RQ is only noted (Sta8): the
        request's responses may still be sent (PS3.8 9.2, AR-7), and the reply goes at the
        next call without ``wait`` (AR-4).

        Raises:
            Aborted: the peer aborted, broke the protocol, stalled or vanished; or we
                aborted after the idle timeout.
        """
        if self.state is State.RELEASE_ASKED:
            if wait is None:
                self._answer_release()
            return None
        if self.state is not State.ESTABLISHED:
            raise Aborted("the association is not established")
        if wait is not None and not self.conn.wait_readable(wait):
            return None
        try:
            pdu_type, body = self.conn.read_pdu(
                self.max_pdu, time.monotonic() + self.timeouts.dimse_idle, self.timeouts.pdu_read
            )
        except PduTooLong as exc:
            raise self._abort_provider(pdu.ABORT_INVALID_PARAMETER_VALUE, str(exc)) from exc
        except TransportError as exc:
            raise self._abort_provider(pdu.ABORT_NOT_SPECIFIED, f"no PDU: {exc}") from exc
        self.counters.pdus_received += 1
        if pdu_type == pdu.P_DATA_TF:
            try:
                return pdu.PDataTF(tuple(pdu.iter_pdvs(body)))
            except pdu.PduError as exc:
                raise self._abort_provider(exc.abort_reason, str(exc)) from exc
        if pdu_type == pdu.RELEASE_RQ:
            if wait is None:
                self._answer_release()
            else:
                self.state = State.RELEASE_ASKED
            return None
        raise self._unexpected(pdu_type, body)

    def send(self, buffers: Sequence[Buffer], messages: int = 1) -> None:
        """Send P-DATA-TF PDUs already framed (net/dimse.py's fragment or pack).

        Raises:
            Aborted: the connection failed (it is closed).
        """
        if self.state not in (State.ESTABLISHED, State.RELEASE_ASKED):
            raise Aborted("the association is not established")
        try:
            self.conn.send(buffers)
        except TransportError as exc:
            self._close()
            raise Aborted(f"send failed: {exc}") from exc
        self.counters.messages_sent += messages

    @property
    def is_established(self) -> bool:
        """True until released, aborted or closed."""
        return self.state is State.ESTABLISHED

    def receive(
        self, wait: float | None = None, sinks: SinkFactory | None = None
    ) -> Message | None:
        """The next whole message (PS3.7 6.3, PS3.8 E.2); None once released, or when
        nothing came within ``wait`` seconds (given only to poll, e.g. for a C-CANCEL).

        ``sinks`` picks where each data set goes as it arrives (default: memory, at most
        16 MiB); a sink left unfinished by an abort is the caller's to discard.

        Raises:
            Aborted: as ``next_pdata``, or the PDVs broke PS3.8 E.2 (we aborted).
        """
        self._sinks = sinks
        assembler = self._assembler
        while True:
            pdvs = self._pending
            self._pending = []
            if not pdvs:
                try:
                    pdata_tf = self.next_pdata(None if assembler.in_message else wait)
                except Aborted:
                    assembler.abandon()
                    raise
                if pdata_tf is None:
                    assembler.abandon()
                    return None
                pdvs = list(pdata_tf.pdvs)
            for i, pdv in enumerate(pdvs):
                if pdv.context_id not in self.contexts:
                    assembler.abandon()
                    raise self._abort_provider(
                        pdu.ABORT_INVALID_PARAMETER_VALUE, f"PDV on context {pdv.context_id}"
                    )
                try:
                    message = assembler.feed(pdv.context_id, pdv.is_command, pdv.is_last, pdv.data)
                except dimse.DimseError as exc:
                    assembler.abandon()
                    raise self._abort_provider(pdu.ABORT_INVALID_PARAMETER_VALUE, str(exc)) from exc
                if message is not None:
                    if i + 1 < len(pdvs):  # the rest views the receive buffer: keep a copy
                        self._pending = [
                            pdu.PDV(p.context_id, p.is_command, p.is_last, bytes(p.data))
                            for p in pdvs[i + 1 :]
                        ]
                    self.counters.messages_received += 1
                    sink = message.dataset
                    data = bytes(sink.data) if isinstance(sink, _MemorySink) else None
                    return Message(message.context_id, message.command, data, sink)

    def _start_dataset(self, command: dimse.Command) -> pdata.Sink:
        context_id = self._assembler.context_id
        if self._sinks is not None and context_id is not None:
            return self._sinks(command, context_id)
        return _MemorySink(MAX_MEMORY_DATASET)

    def send_message(self, context_id: int, command: bytes, dataset: Buffer | None = None) -> None:
        """Send one message: the command set, then its data set, in P-DATA-TF PDUs no
        longer than the peer's Maximum Length (PS3.8 9.3.5, D.1).

        Raises:
            Aborted: the connection failed (it is closed).
        """
        self.send(pdata.fragment(context_id, command, dataset, self.peer_max_pdu))

    def send_messages(
        self, context_id: int, messages: Sequence[tuple[bytes, Buffer | None]]
    ) -> None:
        """Send several messages in one write, each in as few P-DATA-TF PDUs as the peer's
        Maximum Length allows (its command and data set sharing a PDU when they fit).

        Every message ends its last PDU: PS3.8 9.3.5 would let the next message's PDVs share
        it, but peers exist that drop what follows a complete message in a PDU (pynetdicom
        3.0 does).

        Raises:
            Aborted: the connection failed (it is closed).
        """
        buffers: list[Buffer] = []
        for message in messages:
            buffers += pdata.pack_messages(context_id, (message,), self.peer_max_pdu)
        self.send(buffers, len(messages))

    # -- ending --

    def release(self) -> None:
        """A-RELEASE (PS3.8 9.2.2 / 9.3.6-7), release collision included; then closed.

        Raises:
            Aborted: the peer aborted or did not answer within ARTIM (we aborted).
        """
        if self.state is State.RELEASE_ASKED:
            self._answer_release()  # the peer asked first: answered now
            return
        if self.state is not State.ESTABLISHED:
            return
        self._send_pdu(pdu.ReleaseRQ())
        self.state = State.AWAITING_RELEASE_RP
        deadline = time.monotonic() + self.timeouts.artim
        while True:
            pdu_type = self._read_while_releasing(deadline)
            if pdu_type == pdu.RELEASE_RP:
                self._close()  # AR-3
                return
            if pdu_type == pdu.RELEASE_RQ:
                # Release collision (PS3.8 9.2.2, AR-8): the requestor answers first (AR-9,
                # Sta11) then awaits the reply; the acceptor awaits the reply (AR-10, Sta12)
                # then answers (AR-4) and waits for the close.
                if self.is_requestor:
                    self._send_pdu(pdu.ReleaseRP())
                    while self._read_while_releasing(deadline) != pdu.RELEASE_RP:
                        pass
                    self._close()
                else:
                    while self._read_while_releasing(deadline) != pdu.RELEASE_RP:
                        pass
                    self._send_pdu(pdu.ReleaseRP())
                    self._finish(deadline)
                return

    def abort(
        self, reason: int = pdu.ABORT_NOT_SPECIFIED, *, source: int = pdu.ABORT_SOURCE_USER
    ) -> None:
        """A-ABORT (PS3.8 9.3.8, AA-1): send it, wait for the close within ARTIM, close."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        with contextlib.suppress(TransportError):
            self.conn.send([pdu.encode(pdu.Abort(source, reason))])
        self._finish(time.monotonic() + self.timeouts.artim)

    def close(self) -> None:
        """Close the connection without a word (after an error already reported)."""
        self._close()

    # -- internals --

    def _read_while_releasing(self, deadline: float) -> int:
        """The next PDU's type in Sta7/Sta9-12; P-DATA is discarded (AR-6: responses that
        crossed our release are of no use now)."""
        while True:
            try:
                pdu_type, body = self.conn.read_pdu(
                    max(self.max_pdu, _CONTROL_PDUS), deadline, self.timeouts.pdu_read
                )
            except TransportError as exc:
                raise self._abort_provider(pdu.ABORT_NOT_SPECIFIED, f"release: {exc}") from exc
            self.counters.pdus_received += 1
            if pdu_type in (pdu.RELEASE_RP, pdu.RELEASE_RQ):
                return pdu_type
            if pdu_type != pdu.P_DATA_TF:
                raise self._unexpected(pdu_type, body)

    def _answer_release(self) -> None:
        """AR-2, AR-4: the peer released; answer and wait for its close within ARTIM."""
        self._send_pdu(pdu.ReleaseRP())
        if self.is_requestor:
            self._close()
        else:
            self._finish(time.monotonic() + self.timeouts.artim)

    def _unexpected(self, pdu_type: int, body: memoryview) -> Aborted:
        if pdu_type == pdu.ABORT:
            self._close()  # AA-3
            try:
                got = pdu.decode(pdu_type, body)
            except pdu.PduError:
                return Aborted("aborted by the peer")
            assert isinstance(got, pdu.Abort)
            return Aborted("aborted by the peer", got.source, got.reason)
        known = pdu.ASSOCIATE_RQ <= pdu_type <= pdu.ABORT
        reason = pdu.ABORT_UNEXPECTED_PDU if known else pdu.ABORT_UNRECOGNIZED_PDU
        return self._abort_provider(reason, f"PDU type {pdu_type} in {self.state.value}")

    def _abort_provider(self, reason: int, message: str) -> Aborted:
        """AA-8: an A-ABORT from the service provider; returns the error to raise."""
        log.warning("%s from %s: %s; aborting", self.calling_ae, self.peer[0], message)
        self.abort(reason, source=pdu.ABORT_SOURCE_PROVIDER)
        return Aborted(message, pdu.ABORT_SOURCE_PROVIDER, reason)

    def _send_pdu(self, item: pdu.PDU) -> None:
        try:
            self.conn.send([pdu.encode(item)])
        except TransportError as exc:
            self._close()
            raise Aborted(f"send failed: {exc}") from exc
        self.counters.pdus_sent += 1

    def _finish(self, deadline: float) -> None:
        """Sta13: wait for the peer to close, at most until ``deadline``, then close."""
        self.state = State.CLOSED
        self.conn.drain_until_closed(deadline)
        self.conn.close()

    def _close(self) -> None:
        self.state = State.CLOSED
        self.conn.close()


def _contexts(rq: pdu.AssociateRQ, ac: pdu.AssociateAC, requestor: bool) -> dict[int, Context]:
    """The accepted contexts with our roles: SCU for the requestor and SCP for the acceptor
    unless the acceptor's role selection reply says otherwise (PS3.7 D.3.3.4)."""
    proposed = {cx.id: cx for cx in rq.contexts}
    asked = {r.sop_class: r for r in rq.user.roles}
    replied = {r.sop_class: r for r in ac.user.roles}
    out: dict[int, Context] = {}
    for cx in ac.contexts:
        rq_cx = proposed.get(cx.id)
        if cx.result != pdu.PC_ACCEPTANCE or rq_cx is None:
            continue
        uid = rq_cx.abstract_syntax
        rq_scu, rq_scp = True, False
        reply = replied.get(uid)
        if reply is not None and uid in asked:
            rq_scu = reply.scu and asked[uid].scu
            rq_scp = reply.scp and asked[uid].scp
        scu, scp = (rq_scu, rq_scp) if requestor else (rq_scp, rq_scu)
        out[cx.id] = Context(cx.id, uid, cx.transfer_syntax, scu=scu, scp=scp)
    return out


def connect(
    host: str,
    port: int,
    rq: pdu.AssociateRQ,
    timeouts: Timeouts,
    ssl_context: ssl.SSLContext | None = None,
    *,
    max_pdu: int | None = None,
) -> Association:
    """Open an association as requestor (PS3.8 9.2, AE-1 to AE-4); ``max_pdu`` (default: the
    RQ's Maximum Length) is the longest PDU we take.

    Raises:
        Rejected: the acceptor answered A-ASSOCIATE-RJ, whose reason it carries.
        Aborted: no connection, no answer within ARTIM, an A-ABORT or a malformed answer.
    """
    ours = max_pdu if max_pdu is not None else rq.user.max_length or 0
    try:
        sock = socket.create_connection((host, port), timeout=timeouts.artim)
        if ssl_context is not None:
            name = host if ssl_context.check_hostname else None
            sock = ssl_context.wrap_socket(sock, server_hostname=name)
    except OSError as exc:
        raise Aborted(f"cannot connect to {host}:{port}: {exc}") from exc
    conn = Connection(sock, write_timeout=timeouts.pdu_read)
    try:
        conn.send([pdu.encode(rq)])
        pdu_type, body = conn.read_pdu(
            MAX_ASSOCIATE_PDU, time.monotonic() + timeouts.artim, timeouts.pdu_read
        )
        answer = pdu.decode(pdu_type, body)
    except (TransportError, pdu.PduError) as exc:
        _abort_and_close(conn, timeouts, exc)
        raise Aborted(f"association with {host}:{port}: {exc}") from exc
    if isinstance(answer, pdu.AssociateAC):
        return Association(
            conn, requestor=True, rq=rq, ac=answer, timeouts=timeouts, max_pdu=ours or (1 << 32) - 1
        )
    conn.close()
    if isinstance(answer, pdu.AssociateRJ):
        raise Rejected(answer)
    if isinstance(answer, pdu.Abort):
        raise Aborted(f"{host}:{port} aborted", answer.source, answer.reason)
    raise Aborted(f"{host}:{port} answered a {type(answer).__name__}")


def _abort_and_close(conn: Connection, timeouts: Timeouts, exc: Exception) -> None:
    """AA-8 before an association exists: an A-ABORT (unless the socket is gone), then close."""
    reason = exc.abort_reason if isinstance(exc, pdu.PduError) else pdu.ABORT_NOT_SPECIFIED
    if isinstance(exc, PduTooLong):
        reason = pdu.ABORT_INVALID_PARAMETER_VALUE
    if isinstance(exc, pdu.PduError | PduTooLong | TimedOut):
        try:
            conn.send([pdu.encode(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason))])
            conn.drain_until_closed(time.monotonic() + min(timeouts.artim, 1.0))
        except TransportError:
            pass
    conn.close()


class _MemorySink(pdata.BufferSink):
    """The default sink: a data set kept in memory, bounded."""
