"""The admin REST API under /api: statistics, remote AEs (C-ECHO, sending a study to one
as a job), and a study's stored files as one ZIP."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator, Generator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive, Retrieval
from pypacs.query.entity import EntityRef
from pypacs.query.types import InvalidQuery, Query
from pypacs.query.values import check_uid
from pypacs.remote.export import Exporter
from pypacs.remote.jobs import Jobs
from pypacs.remote.registry import Peer, Peers
from pypacs.web.admin import review
from pypacs.web.admin.jobs import echo_json, job_json, peer_json
from pypacs.web.http.errors import HttpProblem, bad_parameter, not_found
from pypacs.web.http.origin import require_json

_STUDY_INSTANCE_UID, _SOP_INSTANCE_UID = 0x0020000D, 0x00080018
_MAX_BODY = 65_536  # a move request is one UID; anything near this is not one
_CHUNK = 1_048_576  # how much of an instance goes into the ZIP stream at a time


def routes(
    archive: Archive, peers: Peers, exporter: Exporter, base: str = "/api", jobs: Jobs | None = None
) -> list[BaseRoute]:
    """The admin API's routes under ``base``; the jobs it starts are run by ``jobs`` (by
    default: jobs of its own, which never take over another node's)."""
    api = _AdminApi(archive, peers, exporter, base, jobs)
    return [
        Route(f"{base}/statistics", api.statistics, methods=["GET"]),
        Route(f"{base}/remotes", api.remotes, methods=["GET"]),
        Route(f"{base}/remotes/{{name}}/echo", api.echo, methods=["POST"]),
        Route(f"{base}/remotes/{{name}}/move", api.move, methods=["POST"]),
        Route(f"{base}/jobs/{{job}}", api.job, methods=["GET"]),
        Route(f"{base}/studies/{{study}}/archive.zip", api.study_zip, methods=["GET"]),
        *review.routes(archive, base),
    ]


class _AdminApi:
    def __init__(
        self, archive: Archive, peers: Peers, exporter: Exporter, base: str, jobs: Jobs | None
    ) -> None:
        self.archive = archive
        self.peers = peers
        self.exporter = exporter
        self.base = base
        self.jobs = jobs or Jobs(archive, exporter, peers=peers)

    def _remote_named(self, name: str) -> Peer:
        peer = self.peers.named(name)
        if peer is None:
            raise not_found(f"unknown remote {name!r} (known: {self.peers.names()})")
        return peer

    async def statistics(self, _request: Request) -> JSONResponse:
        stats = await run_in_threadpool(self.archive.statistics)
        return JSONResponse(
            {
                "patients": stats.patients,
                "studies": stats.studies,
                "series": stats.series,
                "instances": stats.instances,
                "bytes": stats.bytes,
            }
        )

    async def remotes(self, _request: Request) -> JSONResponse:
        return JSONResponse([peer_json(peer) for peer in self.peers])

    async def echo(self, request: Request) -> JSONResponse:
        require_json(request)  # a page of another site cannot send it unasked (web/origin.py)
        peer = self._remote_named(request.path_params["name"])
        result = await run_in_threadpool(self.exporter.echo, peer)
        return JSONResponse(echo_json(peer, result))

    async def move(self, request: Request) -> JSONResponse:
        require_json(request)  # a page of another site cannot send it unasked (web/origin.py)
        peer = self._remote_named(request.path_params["name"])
        study_uid = _study_uid_of(await _json_body(request))
        count = await run_in_threadpool(_count, self.archive, EntityRef(study_uid).query())
        if count == 0:
            raise not_found(f"no study {study_uid}")
        job = await run_in_threadpool(self.jobs.start, study_uid, peer)
        location = f"{self.base}/jobs/{job.id}"
        return JSONResponse(job_json(job), status_code=202, headers={"Location": location})

    async def job(self, request: Request) -> JSONResponse:
        job_id = request.path_params["job"]
        found = await run_in_threadpool(self.jobs.get, job_id)
        if found is None:
            raise not_found(f"no job {job_id!r}")
        return JSONResponse(job_json(found))

    async def study_zip(self, request: Request) -> Response:
        study_uid = _uid(request.path_params["study"], "study")
        query = EntityRef(study_uid).query()
        stack, retrieval = await run_in_threadpool(_open, self.archive, query)
        if retrieval.count == 0:
            await run_in_threadpool(stack.close)
            raise not_found(f"no study {study_uid}")
        headers = {"Content-Disposition": f'attachment; filename="{study_uid}.zip"'}
        if request.method == "HEAD":  # the headers only: no need to read every file
            await run_in_threadpool(stack.close)
            head = Response(media_type="application/zip", headers=headers)
            del head.headers["content-length"]  # unknown: a GET streams the ZIP
            return head
        chunks = _zip_chunks(self.archive, retrieval, stack)
        return StreamingResponse(
            _in_threadpool(chunks), media_type="application/zip", headers=headers
        )


async def _json_body(request: Request) -> Any:
    """The request body parsed as JSON, read up to ``_MAX_BODY`` bytes.

    Raises:
        HttpProblem: too large (413) or not JSON (400).
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise HttpProblem(
                413, "too-large", f"the request body exceeds {_MAX_BODY} bytes", parameter="body"
            )
    try:
        return json.loads(body)
    except ValueError as exc:
        raise bad_parameter("body", f"the request body is not JSON: {exc}") from None


def _study_uid_of(body: Any) -> str:
    if not isinstance(body, dict):
        raise bad_parameter("body", 'expected a JSON object {"StudyInstanceUID": "..."}')
    value = body.get("StudyInstanceUID")
    if not isinstance(value, str):
        raise bad_parameter("StudyInstanceUID", "StudyInstanceUID must be given as a string")
    return _uid(value, "StudyInstanceUID")


def _uid(value: str, parameter: str) -> str:
    """``value`` if it is a UID (PS3.5 9.1), else a 400 naming ``parameter``."""
    try:
        return check_uid(value, _STUDY_INSTANCE_UID)
    except InvalidQuery:
        raise bad_parameter(parameter, f"{parameter} is not a UID: {value!r}") from None


def _count(archive: Archive, query: Query) -> int:
    with archive.retrieve(query) as retrieval:
        return retrieval.count


def _open(archive: Archive, query: Query) -> tuple[ExitStack, Retrieval]:
    """The retrieval of ``query``, kept open by the returned stack until it is closed."""
    with ExitStack() as stack:
        retrieval = stack.enter_context(archive.retrieve(query))
        return stack.pop_all(), retrieval
    raise AssertionError("unreachable")  # pragma: no cover


class _Sink:
    """A write-only, unseekable file that hands over what was written to it, so that
    ``zipfile`` streams (it then writes data descriptors after each entry)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def entry_name(number: int, sop_instance_uid: str) -> str:
    """A ZIP entry's name: numbered, then the SOP Instance UID if it is one (digits and
    dots only, so never a path); peer-supplied text goes in no other way."""
    try:
        check_uid(sop_instance_uid, _SOP_INSTANCE_UID)
    except InvalidQuery:
        return f"{number:05d}.dcm"
    return f"{number:05d}_{sop_instance_uid}.dcm"


def _zip_chunks(
    archive: Archive, retrieval: Retrieval, stack: ExitStack
) -> Generator[bytes, None, None]:
    """The ZIP of the retrieval's stored files as received, one chunk at a time: what is
    held in memory is one instance at most, whatever the study's size."""
    with stack:
        sink = _Sink()
        # ZIP_STORED: the files go in as they were received, not re-compressed.
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive_zip:
            stamp = datetime.now(UTC).timetuple()[:6]
            for number, stored in enumerate(retrieval.instances, start=1):
                data = memoryview(archive.read_instance(stored))
                info = zipfile.ZipInfo(entry_name(number, stored.sop_instance_uid), stamp)
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = len(data)
                with archive_zip.open(info, mode="w") as entry:
                    for start in range(0, len(data), _CHUNK):
                        entry.write(data[start : start + _CHUNK])
                        yield sink.take()
                yield sink.take()
        yield sink.take()


async def _in_threadpool(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Each chunk made in a worker thread; the generator is closed there too, also when
    the client goes away, so that the index snapshot is always released."""
    try:
        while True:
            chunk = await run_in_threadpool(next, chunks, None)
            if chunk is None:
                return
            if chunk:
                yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(chunks.close)
