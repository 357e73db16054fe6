"""HTTP/1.1 connections with bounds: how long a client may take over a request's head and
over each piece of its body, how many connections are open at once, and how long a request
target and a header section may be.

uvicorn bounds only the idle time between two requests (``timeout_keep_alive``) and the
number of *requests* in progress (``limit_concurrency``, which still accepts and keeps every
connection). Its h11 protocol has no deadline for a request's head or body, and a head past
h11's buffer is answered 400 and closed at once, so that a client still sending its long URL
sees a reset instead. None of this can be done in an ASGI middleware: a client sending one
header byte a second never becomes a request the application sees. Hence a subclass of
uvicorn's h11 protocol, given to uvicorn as its ``http`` class (``limited_protocol``). It
hooks the protocol's callbacks only (connection_made, data_received, handle_events,
connection_lost) and keeps h11 as the parser and uvicorn's request/response cycle as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from pypacs.web.http.errors import problem_response
from pypacs.web.options import WebOptions

log = logging.getLogger("pypacs.web")

# Room on a request line besides its target: the method, two spaces and "HTTP/1.1".
_LINE_ROOM = 32
# How long a refused request's remaining bytes are read and dropped after the answer, so
# that the client, still sending, reads the answer instead of a reset (a "lingering close").
_LINGER = 5.0
_END_OF_HEAD = re.compile(rb"\n\r?\n")


def answer(status: int, code: str, message: str, parameter: str | None = None) -> bytes:
    """A whole HTTP/1.1 response in the one JSON error shape, closing the connection."""
    response = problem_response(status, code, message, parameter)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in response.raw_headers]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + bytes(response.body)


class _Head:
    """The request line and header section of the request being received, measured as they
    arrive; each byte is looked at about once, however the head is split."""

    def __init__(self, max_target: int, max_fields: int) -> None:
        self.max_target = max_target
        self.max_fields = max_fields
        self.data = bytearray()
        self.line_end = -1  # where the request line's "\n" is; -1 until it has come
        self.scanned = 0
        self.complete = False

    def feed(self, chunk: bytes) -> tuple[int, str, str, str | None] | None:
        """Take the next bytes; (status, code, message, parameter) when the head is too
        large, None while it is not (h11 parses it)."""
        if self.complete or not chunk:
            return None
        self.data += chunk
        if self.line_end < 0:
            # RFC 9112 2.2: empty lines before the request line are ignored.
            if self.data.startswith((b"\r", b"\n")):
                del self.data[: len(self.data) - len(self.data.lstrip(b"\r\n"))]
                self.scanned = 0
            self.line_end = self.data.find(b"\n", self.scanned)
            if self.line_end < 0:
                self.scanned = len(self.data)
                if len(self.data) > self.max_target + _LINE_ROOM:
                    return self._too_long_target()
                return None
            # RFC 9112 3: request-line = method SP request-target SP HTTP-version
            rest = bytes(self.data[: self.line_end]).rstrip(b"\r").partition(b" ")[2]
            target = rest.rpartition(b" ")[0] if b" " in rest else rest
            if len(target) > self.max_target:
                return self._too_long_target()
            self.scanned = self.line_end
        end = _END_OF_HEAD.search(self.data, max(self.line_end, self.scanned - 2))
        self.complete = end is not None
        self.scanned = len(self.data)
        # The field lines with their line ends, up to the empty line that closes them.
        fields = (end.start() + 1 if end is not None else len(self.data)) - self.line_end - 1
        if fields > self.max_fields:
            # RFC 6585 5: the header fields, one or all together, are too large.
            return (
                431,
                "headers-too-large",
                f"the request's header fields exceed {self.max_fields} bytes",
                None,
            )
        return None

    def _too_long_target(self) -> tuple[int, str, str, str | None]:
        # RFC 9110 15.5.15: 414, the target is longer than the server will interpret.
        message = f"the request target (path and query) exceeds {self.max_target} bytes"
        return 414, "uri-too-long", message, None


class _Refusals:
    """Connections refused for ``max_connections``, logged at most once a second (with how
    many there were) so that a flood of connections does not become a flood of log lines."""

    def __init__(self) -> None:
        self.unlogged = 0
        self.last = -1.0

    def count(self, open_connections: int) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.last >= 1.0:
            log.info(
                "HTTP connections refused: %d since the last report, %d open "
                "([web] max_connections)",
                self.unlogged,
                open_connections,
            )
            self.unlogged, self.last = 0, now


_refusals = _Refusals()


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the bounds of ``options`` (set by ``limited_protocol``)."""

    options: ClassVar[WebOptions]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: _Head | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered and closing: what still arrives is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # self.connections holds this server's open HTTP connections (uvicorn's own set).
        if len(self.connections) >= self.options.max_connections:
            # Closed at once, so that a flood costs a descriptor only for a moment; the
            # client reads the 503 unless its request was already in our receive buffer,
            # in which case the close resets the connection.
            self.transport = transport
            self._refused = True
            _refusals.count(len(self.connections))
            message = f"the server has {self.options.max_connections} HTTP connections open"
            transport.write(answer(503, "too-many-connections", message))
            transport.close()
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.options.header_timeout, self._head_late)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request, read and dropped
        if self.conn.their_state is h11.IDLE:
            if self._head is None:
                # A new request's head; h11 may hold its start already (pipelining).
                self._head = _Head(self.options.max_url_bytes, self.options.max_header_bytes)
                self._head.feed(self.conn.trailing_data[0])
            refusal = self._head.feed(data)
            if refusal is not None:
                self._refuse(*refusal)
                return
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.options.header_timeout, self._head_late
                )
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._head = None
            _cancel(self._head_timer)
            self._head_timer = None
        elif self._head_timer is None and self.conn.trailing_data[0]:
            # Part of a pipelined request's head waits in h11's buffer.
            self._head_timer = self.loop.call_later(self.options.header_timeout, self._head_late)
        _cancel(self._body_timer)
        self._body_timer = None
        if state is h11.SEND_BODY and not self._refused:
            # Restarted by each piece of the body: a deadline on pauses, not on the whole
            # body, so that a large STOW-RS upload over a slow link is not cut short.
            self._body_timer = self.loop.call_later(self.options.body_timeout, self._body_late)

    def connection_lost(self, exc: Exception | None) -> None:
        _cancel(self._head_timer)
        self._head_timer = None
        _cancel(self._body_timer)
        self._body_timer = None
        _cancel(self._linger_timer)
        self._linger_timer = None
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.info(
            "HTTP connection from %s closed: no complete request head within %d s "
            "([web] header_timeout)",
            _peer(self.client),
            self.options.header_timeout,
        )
        self._refused = True
        seconds = self.options.header_timeout
        message = f"the request's line and headers did not arrive within {seconds} s"
        self.transport.write(answer(408, "request-timeout", message))
        self.transport.close()

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # Not the client's delay: the application has not asked for more yet.
            self._body_timer = self.loop.call_later(self.options.body_timeout, self._body_late)
            return
        log.info(
            "HTTP connection from %s closed: the request body paused for %d s ([web] body_timeout)",
            _peer(self.client),
            self.options.body_timeout,
        )
        self._refused = True
        if cycle is not None and not cycle.response_started:
            message = f"the request body paused for more than {self.options.body_timeout} s"
            self.transport.write(answer(408, "request-timeout", message))
        if cycle is not None:
            # The application sees the client gone (as when it drops the connection) and
            # anything it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _refuse(self, status: int, code: str, message: str, parameter: str | None) -> None:
        """Answer a request too large to read, then read and drop what the client still sends
        until it closes or ``_LINGER`` seconds pass."""
        log.info("HTTP request from %s refused: %s", _peer(self.client), message)
        self._refused = True
        _cancel(self._head_timer)
        self._head_timer = None
        self.transport.write(answer(status, code, message, parameter))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(_LINGER, self.transport.close)
        else:
            self.transport.close()


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def limited_protocol(options: WebOptions) -> type[H11Protocol]:
    """The protocol class uvicorn makes each HTTP connection with (``uvicorn.Config(http=)``)."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"options": options})
