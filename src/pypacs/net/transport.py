"""A connected socket with deadlines: whole PDUs in, lists of buffers out (PS3.8 9.3).

Reads go through one receive buffer per connection, filled with as much as the socket
has, so that several small PDUs cost one system call; a PDU's body is handed out as a
memoryview into that buffer, valid until the next read. Works with plain sockets and
ssl.SSLSocket alike.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from collections.abc import Sequence

from pypacs.errors import PypacsError

_HEADER = struct.Struct(">BxL")  # PDU-type, reserved, PDU-length (PS3.8 9.3.1)
HEADER_LENGTH = _HEADER.size
_INITIAL_BUFFER = 64 * 1024
_SEND_BATCH = 64  # buffers given to one sendmsg call (IOV_MAX is at least 1024)

Buffer = bytes | bytearray | memoryview


class TransportError(PypacsError):
    """The connection failed: closed, timed out, or a PDU we refuse."""


class Closed(TransportError):
    """The peer closed the connection (or reset it)."""


class TimedOut(TransportError):
    """The peer sent nothing, or not all of a PDU, before the deadline."""


class PduTooLong(TransportError):
    """A PDU header announced more bytes than we accept; its body was not read."""

    def __init__(self, pdu_type: int, length: int, limit: int) -> None:
        super().__init__(f"PDU type {pdu_type} of {length} bytes exceeds our {limit}")
        self.pdu_type = pdu_type
        self.length = length
        self.limit = limit


class Connection:
    """One TCP (or TLS) connection carrying PDUs."""

    def __init__(self, sock: socket.socket, *, write_timeout: float) -> None:
        self.sock = sock
        self.write_timeout = write_timeout
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0  # first unread byte
        self._end = 0  # one past the last received byte
        try:
            self.peer: tuple[str, int] = sock.getpeername()[:2]
        except OSError:
            self.peer = ("", 0)
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- reading --

    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._end - self._start

    def wait_readable(self, timeout: float) -> bool:
        """Whether data arrives within ``timeout`` seconds (0: has it arrived already)."""
        if self._end > self._start or (self._tls and self.sock.pending()):  # type: ignore[attr-defined]
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        except (OSError, ValueError):
            return True  # a closed socket: the read will say so
        return bool(ready)

    def read_pdu(
        self, max_length: int, wait_deadline: float | None, read_timeout: float
    ) -> tuple[int, memoryview]:
        """The next PDU's type and body (the field after its 6-byte header).

        Waits for its first byte until ``wait_deadline`` (monotonic; None: forever), then
        gives the rest ``read_timeout`` seconds. The body is valid until the next read.

        Raises:
            Closed, TimedOut: the connection ended or stalled.
            PduTooLong: the header announced more than ``max_length`` (body left unread).
        """
        if self._end == self._start:
            self._fill(1, wait_deadline)
        deadline = time.monotonic() + read_timeout
        header = self.recv_exact(HEADER_LENGTH, deadline)
        pdu_type, length = _HEADER.unpack(header)
        if length > max_length:
            raise PduTooLong(pdu_type, length, max_length)
        return pdu_type, self.recv_exact(length, deadline)

    def recv_exact(self, n: int, deadline: float | None) -> memoryview:
        """Exactly ``n`` bytes, a view valid until the next read.

        Raises:
            Closed, TimedOut: the connection ended or stalled before ``n`` bytes came.
        """
        if self._end - self._start < n:
            self._fill(n, deadline)
        start = self._start
        self._start = start + n
        return self._view[start : start + n]

    def _fill(self, n: int, deadline: float | None) -> None:
        """Receive until ``n`` unread bytes are buffered."""
        self._make_room(n)
        while self._end - self._start < n:
            if deadline is None:
                self.sock.settimeout(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimedOut(f"{n - (self._end - self._start)} bytes late")
                self.sock.settimeout(remaining)
            try:
                got = self.sock.recv_into(self._view[self._end :])
            except (TimeoutError, ssl.SSLWantReadError) as exc:
                raise TimedOut(f"{n - (self._end - self._start)} bytes late") from exc
            except OSError as exc:
                raise Closed(str(exc)) from exc
            if got == 0:
                raise Closed("closed by the peer")
            self._end += got
            self.bytes_received += got

    def _make_room(self, n: int) -> None:
        """Make the buffer hold ``n`` bytes from the first unread one."""
        pending = self._end - self._start
        if len(self._buffer) - self._start >= n:
            return
        if len(self._buffer) >= n:
            # Same-size slice assignment: allowed while older views are exported.
            self._buffer[0:pending] = self._view[self._start : self._end]
        else:
            # A new buffer (never a resize: earlier bodies may still be viewed).
            size = max(n, 2 * len(self._buffer))
            bigger = bytearray(size)
            bigger[0:pending] = self._view[self._start : self._end]
            self._buffer = bigger
            self._view = memoryview(bigger)
        self._start, self._end = 0, pending

    # -- writing --

    def send(self, buffers: Sequence[Buffer]) -> None:
        """Send these buffers in order (scatter-gather where the socket allows it).

        Raises:
            Closed, TimedOut: the peer is gone or took nothing for ``write_timeout``.
        """
        self.sock.settimeout(self.write_timeout)
        try:
            if self._tls:
                for buf in buffers:
                    self.sock.sendall(buf)
                    self.bytes_sent += len(buf)
            else:
                self._sendmsg(buffers)
        except TimeoutError as exc:
            raise TimedOut("the peer takes nothing") from exc
        except OSError as exc:
            raise Closed(str(exc)) from exc

    def _sendmsg(self, buffers: Sequence[Buffer]) -> None:
        pending = [memoryview(b).cast("B") for b in buffers if len(b)]
        while pending:
            batch = pending[:_SEND_BATCH]
            sent = self.sock.sendmsg(batch)
            self.bytes_sent += sent
            done = 0
            for view in batch:
                if sent >= len(view):
                    sent -= len(view)
                    done += 1
                else:
                    pending[done] = view[sent:]
                    break
            del pending[:done]

    # -- ending --

    def drain_until_closed(self, deadline: float) -> None:
        """Stop sending, then discard what the peer sends until it closes or the deadline."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self._start = self._end = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self.sock.settimeout(remaining)
                if self.sock.recv_into(self._view) == 0:
                    return
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        """Close the socket (idempotent)."""
        with contextlib.suppress(OSError):
            self.sock.close()
