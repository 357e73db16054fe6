"""What an administrator reviews on the archive page: instances received per minute or per
hour (the ingest rate), and the demographics conflicts recorded on ingest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive
from pypacs.web.http.errors import bad_parameter

# span → (bucket, number of buckets, width of a bucket)
_SPANS = {
    "hour": ("minute", 60, timedelta(minutes=1)),
    "day": ("hour", 24, timedelta(hours=1)),
}
_BUCKET_FORMAT = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H"}
_MAX_PAGE = 1000


def routes(archive: Archive, base: str = "/api") -> list[BaseRoute]:
    """The review routes under ``base``."""

    async def ingest(request: Request) -> JSONResponse:
        span = request.query_params.get("span", "hour")
        if span not in _SPANS:
            raise bad_parameter("span", f"span must be hour or day, not {span!r}")
        bucket, count, width = _SPANS[span]
        now = datetime.now(UTC)
        # The buckets end with the current one: the oldest starts count - 1 widths earlier.
        fmt = _BUCKET_FORMAT[bucket]
        current = datetime.strptime(now.strftime(fmt), fmt).replace(tzinfo=UTC)
        starts = [current - width * (count - 1 - i) for i in range(count)]
        # stored_at is ISO 8601 in UTC: a bucket's text is a prefix of each of its values.
        since = starts[0].strftime(fmt)
        found = await run_in_threadpool(archive.received_per_bucket, since, bucket)
        counts = [found.get(start.strftime(fmt), 0) for start in starts]
        buckets = [
            {"start": start.isoformat(), "instances": n}
            for start, n in zip(starts, counts, strict=True)
        ]
        return JSONResponse(
            {"span": span, "bucket": bucket, "instances": sum(counts), "buckets": buckets}
        )

    async def conflicts(request: Request) -> JSONResponse:
        limit = _count(request, "limit", 100)
        offset = _count(request, "offset", 0)
        if limit > _MAX_PAGE:
            raise bad_parameter("limit", f"limit must be at most {_MAX_PAGE}, not {limit}")
        total, page = await run_in_threadpool(archive.demographics_conflicts, limit, offset)
        return JSONResponse({"total": total, "conflicts": [_conflict_json(c) for c in page]})

    return [
        Route(f"{base}/ingest", ingest, methods=["GET"]),
        Route(f"{base}/conflicts", conflicts, methods=["GET"]),
    ]


def _count(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise bad_parameter(name, f"{name} must be a whole number, not {text!r}")
    return int(text)


def _conflict_json(conflict: Any) -> dict[str, Any]:
    return {
        "patient_id": conflict.patient_id,
        "patient_name": conflict.patient_name,
        "sop_instance_uid": conflict.sop_instance_uid,
        "attribute": conflict.attribute,
        "stored": conflict.stored_value,
        "received": conflict.received_value,
        "seen_at": conflict.seen_at,
    }
