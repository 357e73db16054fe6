"""QIDO-RS: search for studies, series and instances (PS3.18 10.6)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive
from pypacs.model.levels import Level
from pypacs.query.from_qido import QidoSearch, parse_qido
from pypacs.query.respond import ResponseContext
from pypacs.query.types import QueryOptions
from pypacs.web.dicomweb.resources import service_url
from pypacs.web.http.negotiate import JSON_TYPES, choose
from pypacs.web.options import WebOptions

_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"
_RETRIEVE_URL = "00081190"
_CHUNK = 64 * 1024


def _value(obj: dict[str, Any], key: str) -> str | None:
    element = obj.get(key)
    if not element or not element.get("Value"):
        return None
    return str(element["Value"][0])


class _Urls:
    """RetrieveURL (0008,1190) of each match: the WADO-RS URL of that entity (PS3.18 10.6.3)."""

    def __init__(self, request: Request, base: str, level: Level) -> None:
        self.root = service_url(request, base)
        self.level = level

    def __call__(self, obj: dict[str, Any]) -> str | None:
        study = _value(obj, _STUDY)
        if study is None:
            return None
        url = f"{self.root}/studies/{study}"
        if self.level is Level.STUDY:
            return url
        series = _value(obj, _SERIES)
        if series is None:
            return None
        url += f"/series/{series}"
        if self.level is Level.SERIES:
            return url
        sop = _value(obj, _SOP)
        return None if sop is None else f"{url}/instances/{sop}"


def _encoded(objects: Iterator[dict[str, Any]], urls: _Urls) -> Iterator[bytes]:
    """The JSON array, in chunks of about 64 KiB (one thread hop per chunk, not per match)."""
    parts: list[str] = ["["]
    size = 1
    first = True
    for obj in objects:
        url = urls(obj)
        obj[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]} if url else {"vr": "UR"}
        text = json.dumps(dict(sorted(obj.items())), separators=(",", ":"), ensure_ascii=False)
        parts.append(text if first else "," + text)
        first = False
        size += len(text) + 1
        if size >= _CHUNK:
            yield "".join(parts).encode()
            parts, size = [], 0
    parts.append("]")
    yield "".join(parts).encode()


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    context = ResponseContext(options.ae_title)
    query_options = QueryOptions(
        pn_case_insensitive=options.pn_case_insensitive, max_results=options.max_results
    )

    def search_endpoint(level: Level) -> Any:
        async def search(request: Request) -> Response:
            # PS3.18 10.6.1.1: DICOM JSON, or XML, which pypacs does not produce (406).
            answer_type = choose(request, JSON_TYPES, "a search result")
            parsed: QidoSearch = parse_qido(
                # PS3.18 8.3.3.1: accept is the response's media type, not a matching key.
                [(k, v) for k, v in request.query_params.multi_items() if k != "accept"],
                level,
                study_uid=request.path_params.get("study"),
                series_uid=request.path_params.get("series"),
                options=query_options,
                default_limit=options.qido_default_limit,
            )
            query = parsed.query
            warnings = list(parsed.warnings)
            objects: Iterator[dict[str, Any]]
            if parsed.default_limit:
                # One past the server's own limit tells whether matches were left out; at
                # most that many are held (PS3.18 8.3.4.4).
                limit = query.limit
                matches = archive.search(dataclasses.replace(query, limit=limit + 1), context)
                kept = await run_in_threadpool(_take, matches, limit + 1)
                if len(kept) > limit:
                    del kept[limit:]
                    warnings.append(
                        "The number of results exceeded the maximum supported by the server. "
                        "Additional results can be requested."
                    )
                empty, objects = not kept, iter(kept)
            else:
                matches = archive.search(query, context)
                first = await run_in_threadpool(next, matches, None)
                empty = first is None
                objects = _chain(first, matches) if first is not None else iter(())
            total = await run_in_threadpool(archive.count, query) if parsed.total else None
            response: Response
            if empty:
                # PS3.18 8.3.4: the search completed successfully with zero results.
                response = Response(status_code=204)
            else:
                response = StreamingResponse(
                    iterate_in_threadpool(_encoded(objects, _Urls(request, base, level))),
                    media_type=answer_type,
                )
            for text in warnings:
                # PS3.18 8.3.4.2, 8.3.4.4: Warning: 299 <service>: <text> (RFC 7234 5.5).
                response.raw_headers.append(
                    (b"warning", f"299 {service_url(request, base)}: {text}".encode())
                )
            if total is not None:
                # pypacs' total=true extension: the matches whatever limit and offset.
                response.headers["X-Total-Count"] = str(total)
            return response

        return search

    studies, series, instances = (search_endpoint(lvl) for lvl in Level if lvl.depth > 0)
    return [
        # An extension: PS3.18 has no patient resource; C-FIND's PATIENT level as JSON.
        Route(f"{base}/patients", search_endpoint(Level.PATIENT), methods=["GET"]),
        Route(f"{base}/studies", studies, methods=["GET"]),
        Route(f"{base}/series", series, methods=["GET"]),
        Route(f"{base}/instances", instances, methods=["GET"]),
        Route(f"{base}/studies/{{study}}/series", series, methods=["GET"]),
        Route(f"{base}/studies/{{study}}/instances", instances, methods=["GET"]),
        Route(f"{base}/studies/{{study}}/series/{{series}}/instances", instances, methods=["GET"]),
    ]


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _take(objects: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for obj in objects:
        kept.append(obj)
        if len(kept) == count:
            break
    return kept
