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


@dataclass
class Part:
    """One body part: its header fields (names lower-cased) and its content."""

    headers: dict[str, str]
    body: bytearray

    @property
    def content_type(self) -> str | None:
        """The part's media type (lower-cased, without parameters); None when not given."""
        value = self.headers.get("content-type")
        return media_type(value)[0] if value else None


class _State(Enum):
    PREAMBLE = 1
    HEADERS = 2
    BODY = 3
    DONE = 4


class PartReader:
    """Incremental multipart reader: feed it chunks as they arrive, get each part as soon
    as its closing delimiter has been seen. Memory holds one part and a chunk's worth."""

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        # The first delimiter may open the body without a CRLF before it: start with one.
        self._buf = bytearray(b"\r\n")
        self._scan = 0  # no delimiter starts before this offset of the buffer
        self._state = _State.PREAMBLE
        self._headers: dict[str, str] = {}
        self.parts = 0

    @property
    def done(self) -> bool:
        """Whether the closing delimiter has been read."""
        return self._state is _State.DONE

    def feed(self, chunk: bytes) -> list[Part]:
        """Take the next bytes of the body; return the parts they complete.

        Raises:
            MultipartError: the bytes cannot belong to a well-formed body.
        """
        parts: list[Part] = []
        if self.done:
            return parts  # the epilogue
        self._buf += chunk
        while not self.done:
            if self._state is _State.HEADERS:
                if not self._read_headers():
                    return parts
            else:
                part = self._read_to_delimiter()
                if part is None:
                    return parts
                if part is not _NO_PART:
                    parts.append(part)
        self._buf = bytearray()
        return parts

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

    def _read_to_delimiter(self) -> Part | None:
        """Find the next delimiter; return the part it ends (``_NO_PART`` after the
        preamble), or None when more bytes are needed."""
        buf, delimiter = self._buf, self._delimiter
        while True:
            at = buf.find(delimiter, self._scan)
            if at < 0:
                keep_from = max(0, len(buf) - len(delimiter) + 1)
                if self._state is _State.PREAMBLE:
                    del buf[:keep_from]  # the preamble is ignored: keep no more of it
                    self._scan = 0
                else:
                    self._scan = keep_from
                return None
            kind, end = _after_delimiter(buf, at + len(delimiter))
            if kind == "more":
                self._scan = at
                return None
            if kind == "no":  # boundary text inside the content, not a delimiter
                self._scan = at + 1
                continue
            break
        part: Part = _NO_PART
        if self._state is _State.BODY:
            # The part's content is the buffer up to the delimiter: no copy of it is made.
            self._buf = bytearray(buf[end:])
            del buf[at:]
            part = Part(self._headers, buf)
            self.parts += 1
        else:
            del buf[:end]
        self._scan = 0
        self._state = _State.DONE if kind == "close" else _State.HEADERS
        return part

    def _read_headers(self) -> bool:
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
        self._headers = _header_fields(block)
        self._state = _State.BODY
        self._scan = 0
        return True


_NO_PART = Part({}, bytearray())


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
