"""multipart/related bodies (RFC 2387) as PS3.18 8.6/8.7 uses them: writing parts."""

from __future__ import annotations

import secrets


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
