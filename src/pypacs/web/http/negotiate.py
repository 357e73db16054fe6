"""Content negotiation of the retrieve services: Accept media ranges, their quality and
transfer syntax parameters (PS3.18 8.7.3, 8.7.8), and the media types of compressed
frames (Table 8.7.3-5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydicom import uid as ts
from starlette.requests import Request

from pypacs.model.uid import is_acceptable_uid
from pypacs.web.http.errors import bad_parameter

ANY_SYNTAX = "*"

# PS3.18 Table 8.7.3-5: media type of compressed pixel data → its transfer syntaxes,
# the default (used when the media type names none) first.
COMPRESSED_MEDIA: Mapping[str, tuple[str, ...]] = {
    "image/jpeg": (
        ts.JPEGLosslessSV1,
        ts.JPEGBaseline8Bit,
        ts.JPEGExtended12Bit,
        ts.JPEGLossless,
    ),
    "image/dicom-rle": (ts.RLELossless,),
    "image/jls": (ts.JPEGLSLossless, ts.JPEGLSNearLossless),
    "image/jp2": (ts.JPEG2000Lossless, ts.JPEG2000),
    "image/jpx": (ts.JPEG2000MCLossless, ts.JPEG2000MC),
    "image/jphc": (ts.HTJ2KLossless, ts.HTJ2KLosslessRPCL, ts.HTJ2K),
    "video/mpeg": (ts.MPEG2MPML, ts.MPEG2MPHL),
    "video/mp4": (
        ts.MPEG4HP41,
        ts.MPEG4HP41BD,
        ts.MPEG4HP422D,
        ts.MPEG4HP423D,
        ts.MPEG4HP42STEREO,
        ts.HEVCMP51,
        ts.HEVCM10P51,
    ),
}
MEDIA_OF_SYNTAX: Mapping[str, str] = {
    syntax: media for media, syntaxes in COMPRESSED_MEDIA.items() for syntax in syntaxes
}

# Syntaxes whose pixel data may have lost information (PS3.5 A.4, 8.2): what PS3.18 8.7.3.4
# lets the origin server send as it has it when the request names no transfer syntax.
LOSSY: frozenset[str] = frozenset(
    {
        ts.JPEGBaseline8Bit,
        ts.JPEGExtended12Bit,
        ts.JPEGLSNearLossless,
        ts.JPEG2000,
        ts.JPEG2000MC,
        ts.HTJ2K,
        *(s for s in MEDIA_OF_SYNTAX if MEDIA_OF_SYNTAX[s].startswith("video/")),
    }
)


@dataclass(frozen=True)
class MediaRange:
    """One acceptable media type. ``media`` is lower case and, for a multipart range, the
    type of its parts (``multipart/related; type="application/dicom"`` →
    ``application/dicom`` with ``multipart`` set); ``*`` when the multipart range names
    no type."""

    media: str
    multipart: bool = False
    params: Mapping[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media: str) -> bool:
        """Whether this range admits the media type ``media`` (``type/subtype``)."""
        if self.media in ("*", "*/*", media):
            return True
        kind = media.split("/")[0]
        return self.media == f"{kind}/*"


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside double quotes."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


# RFC 9110 5.6.2, 8.3.1: type "/" subtype, both tokens.
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")


def _parse_range(text: str, parameter: str) -> MediaRange | None:
    pieces = _split(text, ";")
    media = pieces[0].strip().lower()
    if not media:
        return None
    if not _MEDIA_TYPE.fullmatch(media):
        raise bad_parameter(parameter, f"{text.strip()!r} is not a media type")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        if not piece.strip():
            continue
        if not sep:
            raise bad_parameter(parameter, f"media type parameter {piece.strip()!r} lacks a value")
        params[name.strip().lower()] = value.strip().strip('"')
    q = 1.0
    if "q" in params:
        try:
            q = float(params.pop("q"))
        except ValueError as exc:
            raise bad_parameter(
                parameter, f"quality value in {text.strip()!r} is not a number"
            ) from exc
        if not 0.0 <= q <= 1.0:
            raise bad_parameter(parameter, f"quality value in {text.strip()!r} is not in 0..1")
    multipart = media.startswith("multipart/")
    if multipart:
        if media not in ("multipart/related", "multipart/*"):
            return MediaRange(media, params=params, q=q)  # never acceptable here
        media = params.pop("type", "*").lower()
        params.pop("boundary", None)
    return MediaRange(media, multipart, params, q)


def parse_accept(values: Iterable[str], parameter: str = "Accept") -> list[MediaRange]:
    """Media ranges, most preferred first (by quality value, then as listed); ranges with
    q=0 are not acceptable and left out (RFC 9110 12.5.1).

    Raises:
        HttpProblem: 400 naming ``parameter`` when a range does not parse.
    """
    ranges = [
        parsed
        for value in values
        for item in _split(value, ",")
        if (parsed := _parse_range(item, parameter)) is not None
    ]
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def acceptable(request: Request) -> list[MediaRange]:
    """The Acceptable Media Types of a request: the ``accept`` query parameter when given
    (PS3.18 8.3.3.1), else the Accept header; any media type when neither says."""
    query = request.query_params.getlist("accept")
    if query:
        return parse_accept(query, "accept")
    header = request.headers.getlist("accept")
    if not any(h.strip() for h in header):
        return [MediaRange("*/*")]
    return parse_accept(header)


def describe(ranges: Sequence[MediaRange]) -> str:
    shown = [
        (f'multipart/related; type="{r.media}"' if r.multipart else r.media)
        + "".join(f"; {k}={v}" for k, v in r.params.items())
        for r in ranges
    ]
    return ", ".join(shown) or "nothing"


def is_uid(value: str) -> bool:
    """A UID by the rule of every door (model/uid.py)."""
    return is_acceptable_uid(value)
