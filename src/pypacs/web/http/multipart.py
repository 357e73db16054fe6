"""multipart/related bodies (RFC 2387) as PS3.18 8.6/8.7 uses them: writing and reading parts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from enum import Enum

from pypacs.errors import PypacsError


def new_boundary() -> str:
    return "pypacs-" + secrets.token_hex(16)


def related_type(boundary: str, part_type: str) -> str:
    """The Content-Type of a multipart/related body whose parts are all ``part_type``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, content_type: str, location: str | None = None) -> bytes:
    """The delimiter and headers that open one part (each part after the first starts
    with the CRLF that ends the previous one's body)."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if location is not None:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def part_tail() -> bytes:
    return b"\r\n"


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


# -- reading -----------------------------------------------------------------------------
# RFC 2046 5.1.1: a part starts after "--boundary" (+ optional transport padding) CRLF and
# ends at CRLF "--boundary"; "--boundary--" closes the body; what precedes the first
# delimiter (preamble) and follows the closing one (epilogue) is ignored.

_MAX_BOUNDARY = 256  # RFC 2046 allows 70 characters; longer ones are accepted all the same
_MAX_HEADER_BYTES = 64 * 1024
_MAX_PADDING = 1024


class MultipartError(PypacsError):
    """The body is not a well-formed multipart body (the request is answered with 400)."""


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type value as (type/subtype lower-cased, parameters with lower-cased names).

    Parameter values may be quoted strings (RFC 9110 5.6.4); quotes and escapes are removed.
    """
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            chars: list[str] = []
            i += 1
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1  # the closing quote
            text = "".join(chars)
        else:
            end = rest.find(";", i)
            end = n if end < 0 else end
            text = rest[i:end].strip()
            i = end
        if name:
            params[name] = text
    return kind.strip().lower(), params


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type.

    Raises:
        MultipartError: there is none, or it cannot be a boundary.
    """
    boundary = media_type(content_type)[1].get("boundary")
    if not boundary:
        raise MultipartError(f"the Content-Type {content_type!r} has no boundary parameter")
    if len(boundary) > _MAX_BOUNDARY or any(c in boundary for c in "\r\n"):
        raise MultipartError(f"the boundary {boundary!r} is not a valid boundary")
    return boundary


@dataclass(frozen=True)
class PartHead:
    """The header fields of a part (names lower-cased), read before its content."""

    headers: dict[str, str]

    @property
    def content_type(self) -> str | None:
        """The part's media type (lower-cased, without parameters); None when not given."""
        value = self.headers.get("content-type")
        return media_type(value)[0] if value else None


@dataclass
class Part:
    """One body part: its header fields (names lower-cased) and its content."""

    headers: dict[str, str]
    body: bytearray

    @property
    def content_type(self) -> str | None:
        """The part's media type (lower-cased, without parameters); None when not given."""
        return PartHead(self.headers).content_type


# What ``PartStream.feed`` gives: a part's head, a piece of its content, or None for its end.
Event = PartHead | bytes | None


class _State(Enum):
    PREAMBLE = 1
    HEADERS = 2
    BODY = 3
    DONE = 4


class PartStream:
    """Incremental multipart reader that never holds a part: feed it chunks as they arrive,
    get each part's head, its content piece by piece, and its end. Memory holds a chunk and
    at most a delimiter's length (plus transport padding) of the bytes before it."""

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        # The first delimiter may open the body without a CRLF before it: start with one.
        self._buf = bytearray(b"\r\n")
        self._scan = 0  # no delimiter starts before this offset of the buffer
        self._state = _State.PREAMBLE
        self.parts = 0  # parts whose head has been read

    @property
    def done(self) -> bool:
        """Whether the closing delimiter has been read."""
        return self._state is _State.DONE

    @property
    def buffered(self) -> int:
        """Bytes received and not given out yet."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next bytes of the body; return what they complete, in order.

        Raises:
            MultipartError: the bytes cannot belong to a well-formed body.
        """
        events: list[Event] = []
        if self.done:
            return events  # the epilogue
        self._buf += chunk
        while not self.done:
            progressed = (
                self._read_headers(events)
                if self._state is _State.HEADERS
                else self._read_to_delimiter(events)
            )
            if not progressed:
                return events
        self._buf = bytearray()
        return events

    def close(self) -> None:
        """The body has ended.

        Raises:
            MultipartError: the closing delimiter was never read.
        """
        if self._state is _State.DONE:
            return
        boundary = self._delimiter[4:].decode("latin-1")
        if self._state is _State.PREAMBLE:
            raise MultipartError(f"the body holds no part delimited by --{boundary}")
        raise MultipartError(f"the body ends before its closing delimiter --{boundary}--")

    def _give(self, events: list[Event], end: int) -> None:
        """The buffer up to ``end`` is content (of the part, or of the ignored preamble)."""
        if end <= 0:
            return
        if self._state is _State.BODY:
            events.append(bytes(self._buf[:end]))
        del self._buf[:end]

    def _read_to_delimiter(self, events: list[Event]) -> bool:
        """Give out content up to the next delimiter and, when it is there, the end of the
        part it closes; False when more bytes are needed."""
        buf, delimiter = self._buf, self._delimiter
        while True:
            at = buf.find(delimiter, self._scan)
            if at < 0:
                # A delimiter may begin in the last bytes: keep those, give out the rest.
                self._give(events, len(buf) - len(delimiter) + 1)
                self._scan = 0
                return False
            kind, end = _after_delimiter(buf, at + len(delimiter))
            if kind == "more":
                self._give(events, at)
                self._scan = 0
                return False
            if kind == "no":  # boundary text inside the content, not a delimiter
                self._scan = at + 1
                continue
            break
        self._give(events, at)
        del buf[: end - at]
        if self._state is _State.BODY:
            events.append(None)
        self._scan = 0
        self._state = _State.DONE if kind == "close" else _State.HEADERS
        return True

    def _read_headers(self, events: list[Event]) -> bool:
        buf = self._buf
        if len(buf) < 2:
            return False
        if buf.startswith(b"\r\n"):  # no header fields at all
            end, block = 2, b""
        else:
            at = buf.find(b"\r\n\r\n")
            if at < 0:
                if len(buf) > _MAX_HEADER_BYTES:
                    raise MultipartError(f"part header fields longer than {_MAX_HEADER_BYTES}")
                return False
            end, block = at + 4, bytes(buf[:at])
        if end > _MAX_HEADER_BYTES:
            raise MultipartError(f"part header fields longer than {_MAX_HEADER_BYTES}")
        del buf[:end]
        events.append(PartHead(_header_fields(block)))
        self.parts += 1
        self._state = _State.BODY
        self._scan = 0
        return True


class PartReader:
    """Incremental multipart reader giving whole parts, each as soon as its closing
    delimiter has been seen. Memory holds one part and a chunk's worth."""

    def __init__(self, boundary: str) -> None:
        self._stream = PartStream(boundary)
        self._head = PartHead({})
        self._body = bytearray()
        self.parts = 0

    @property
    def done(self) -> bool:
        """Whether the closing delimiter has been read."""
        return self._stream.done

    @property
    def buffered(self) -> int:
        """Bytes received and not part of a returned or begun part."""
        return self._stream.buffered

    def feed(self, chunk: bytes) -> list[Part]:
        """Take the next bytes of the body; return the parts they complete.

        Raises:
            MultipartError: the bytes cannot belong to a well-formed body.
        """
        parts: list[Part] = []
        for event in self._stream.feed(chunk):
            if isinstance(event, PartHead):
                self._head, self._body = event, bytearray()
            elif event is None:
                parts.append(Part(self._head.headers, self._body))
                self._body = bytearray()
                self.parts += 1
            else:
                self._body += event
        return parts

    def close(self) -> None:
        """The body has ended.

        Raises:
            MultipartError: the closing delimiter was never read.
        """
        self._stream.close()


def _after_delimiter(buf: bytearray, at: int) -> tuple[str, int]:
    """What follows a delimiter's boundary: ("close", end) for "--", ("open", end) for
    transport padding and CRLF, ("more", 0) when undecided yet, ("no", 0) when the bytes
    make it no delimiter at all."""
    n = len(buf)
    if at >= n:
        return "more", 0
    if buf[at] == 0x2D:  # "-"
        if at + 1 >= n:
            return "more", 0
        return ("close", at + 2) if buf[at + 1] == 0x2D else ("no", 0)
    i = at
    while i < n and buf[i] in b" \t":
        i += 1
        if i - at > _MAX_PADDING:
            raise MultipartError("a delimiter is followed by too much transport padding")
    if i + 1 >= n:
        return ("more", 0) if i == n or buf[i] == 0x0D else ("no", 0)
    if buf[i] == 0x0D and buf[i + 1] == 0x0A:
        return "open", i + 2
    return "no", 0


def _header_fields(block: bytes) -> dict[str, str]:
    """Header fields of a part (RFC 5322 2.2: "name: value", folded lines unfolded)."""
    fields: dict[str, str] = {}
    name = ""
    for line in block.decode("latin-1").split("\r\n") if block else ():
        if line[:1] in (" ", "\t") and name:
            fields[name] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise MultipartError(f"a part has a malformed header line {line!r}")
        name = key.strip().lower()
        fields[name] = value.strip()
    return fields


async def read_events(chunks: AsyncIterable[bytes], boundary: str) -> AsyncIterator[Event]:
    """The heads, content pieces and ends of the parts of a body arriving as ``chunks``.

    Raises:
        MultipartError: the body is malformed or ends before its closing delimiter.
    """
    stream = PartStream(boundary)
    async for chunk in chunks:
        for event in stream.feed(chunk):
            yield event
    stream.close()


async def read_parts(chunks: AsyncIterable[bytes], boundary: str) -> AsyncIterator[Part]:
    """The parts of a multipart body arriving as ``chunks``, each yielded once complete.

    Raises:
        MultipartError: the body is malformed or ends before its closing delimiter.
    """
    reader = PartReader(boundary)
    async for chunk in chunks:
        parts = reader.feed(chunk)
        parts.reverse()
        while parts:
            yield parts.pop()  # no reference kept here once the consumer has it
    reader.close()
