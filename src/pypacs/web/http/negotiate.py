"""Content negotiation of every HTTP service: the one parser of the Accept header and of the
``accept`` query parameter (PS3.18 8.3.3.1, 8.7.8.1), media ranges with their quality
(RFC 9110 12.4.2, 12.5.1) and transfer syntax parameters (PS3.18 8.7.3)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.requests import Request

from pypacs.web.http.errors import bad_parameter, not_acceptable

ANY_SYNTAX = "*"
DICOM_JSON = "application/dicom+json"
# PS3.18 F.2, 10.6.1.1: DICOM JSON answers, as application/json too for a client that only
# knows JSON (XML, the other format the standard names, is not produced: 406).
JSON_TYPES = (DICOM_JSON, "application/json")


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


def _ranges(values: Iterable[str], parameter: str) -> list[MediaRange]:
    """Every media range as listed, q=0 ones included."""
    return [
        parsed
        for value in values
        for item in _split(value, ",")
        if (parsed := _parse_range(item, parameter)) is not None
    ]


def parse_accept(values: Iterable[str], parameter: str = "Accept") -> list[MediaRange]:
    """Media ranges, most preferred first (by quality value, then as listed); ranges with
    q=0 are not acceptable and left out (RFC 9110 12.4.2).

    Raises:
        HttpProblem: 400 naming ``parameter`` when a range does not parse.
    """
    return sorted((r for r in _ranges(values, parameter) if r.q > 0), key=lambda r: -r.q)


def _sources(request: Request) -> list[tuple[str, list[MediaRange]]]:
    """The request's lists of media ranges, by priority: the ``accept`` query parameter,
    then the Accept header (PS3.18 8.7.8.1 steps 2 and 3); none when neither is given."""
    sources = []
    query = request.query_params.getlist("accept")
    if query:
        sources.append(("accept", _ranges(query, "accept")))
    header = request.headers.getlist("accept")
    if any(h.strip() for h in header):
        sources.append(("Accept", _ranges(header, "Accept")))
    return sources


def acceptable(request: Request) -> list[MediaRange]:
    """The Acceptable Media Types of a request, most preferred first: those of the
    ``accept`` query parameter, then the Accept header's (PS3.18 8.7.8.1); any media type
    when neither says."""
    sources = _sources(request)
    if not sources:
        return [MediaRange("*/*")]
    return [r for _, ranges in sources for r in sorted(ranges, key=lambda r: -r.q) if r.q > 0]


def _specificity(r: MediaRange) -> int:
    return 0 if r.media in ("*", "*/*") else 1 if r.media.endswith("/*") else 2


def _preferred(ranges: Sequence[MediaRange], offered: Sequence[str]) -> str | None:
    """The offered single-part media type ``ranges`` prefer: each weighted by the quality of
    the most specific range that matches it (RFC 9110 12.5.1), so ``*/*, a/b;q=0`` excludes
    a/b; ties go to the range listed first, then to the order of ``offered``."""
    best: tuple[float, int, int] | None = None
    chosen = None
    for rank, media in enumerate(offered):
        matching = [(i, r) for i, r in enumerate(ranges) if not r.multipart and r.matches(media)]
        if not matching:
            continue
        position, decisive = max(matching, key=lambda m: (_specificity(m[1]), -m[0]))
        key = (-decisive.q, position, rank)
        if decisive.q > 0 and (best is None or key < best):
            best, chosen = key, media
    return chosen


def choose(request: Request, offered: Sequence[str], what: str) -> str:
    """The media type of the answer, among ``offered`` (the default first): the query
    parameter's choice, else the Accept header's (PS3.18 8.7.8.1).

    Raises:
        HttpProblem: 400 when a media range does not parse; 406 when none is acceptable.
    """
    sources = _sources(request)
    if not sources:
        return offered[0]
    for _, ranges in sources:
        chosen = _preferred(ranges, offered)
        if chosen is not None:
            return chosen
    asked = "; ".join(f"{name}: {describe(ranges)}" for name, ranges in sources)
    raise not_acceptable(f"{what} is sent as {' or '.join(offered)}; the request accepts {asked}")


def describe(ranges: Sequence[MediaRange]) -> str:
    shown = [
        (f'multipart/related; type="{r.media}"' if r.multipart else r.media)
        + "".join(f"; {k}={v}" for k, v in r.params.items())
        for r in ranges
    ]
    return ", ".join(shown) or "nothing"
