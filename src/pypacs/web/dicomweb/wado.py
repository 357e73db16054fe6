"""WADO-RS: retrieve studies, series and instances as DICOM (PS3.18 10.4), and the routes
of every WADO-RS resource (metadata, frames, bulk data, rendered, thumbnails)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from pydicom import uid as ts
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive, Retrieval, StoredInstance
from pypacs.archive.outgoing import Form, sendable_syntax
from pypacs.errors import TranscodeError
from pypacs.model.levels import Level
from pypacs.model.syntax import LOSSY
from pypacs.query.entity import EntityRef
from pypacs.web.dicomweb import frames, rendered
from pypacs.web.dicomweb.metadata import metadata_endpoint
from pypacs.web.dicomweb.resources import entered, entity_of, service_url
from pypacs.web.http.errors import not_acceptable, not_found
from pypacs.web.http.multipart import closing, new_boundary, part_head, part_tail, related_type
from pypacs.web.http.negotiate import ANY_SYNTAX, MediaRange, acceptable, describe
from pypacs.web.options import WebOptions

log = logging.getLogger(__name__)

DICOM = "application/dicom"
# A media range that names no transfer syntax asks for the default one.
DEFAULT_SYNTAX = ""


@dataclass(frozen=True)
class DicomPlan:
    """What a request for DICOM instances accepts: one multipart body or (for a single
    instance) a bare Part 10 file, and the transfer syntaxes in order of preference."""

    multipart: bool
    syntaxes: tuple[str, ...]


def dicom_plan(ranges: list[MediaRange], single: bool) -> DicomPlan:
    """PS3.18 8.7.3, 8.7.8: the DICOM media ranges among the acceptable ones.

    Raises:
        HttpProblem: 406 when none asks for application/dicom.
    """
    multipart: bool | None = None
    syntaxes: list[str] = []
    for r in ranges:
        if not r.matches(DICOM):
            continue
        # A bare application/dicom is a single Part 10 file: only an instance is one.
        bare = not r.multipart and r.media == DICOM
        if bare and not single:
            continue
        if multipart is None:
            multipart = not bare
        elif multipart == bare:
            continue  # the body is one or the other, as the preferred range says
        syntaxes.append(r.transfer_syntax or DEFAULT_SYNTAX)
    if multipart is None:
        wanted = 'multipart/related; type="application/dicom"'
        raise not_acceptable(f"DICOM instances are sent as {wanted}; accepted: {describe(ranges)}")
    return DicomPlan(multipart, tuple(syntaxes))


def target_syntax(stored: str, preferences: tuple[str, ...]) -> str | None:
    """The transfer syntax to send an instance stored in ``stored``, or None."""
    for wanted in preferences:
        if wanted == ANY_SYNTAX:
            return stored
        if wanted == DEFAULT_SYNTAX:
            # PS3.18 8.7.3.4: Explicit VR Little Endian, unless the pixel data is held only
            # lossy compressed (or in a form pypacs cannot decode): then as it is held.
            if stored in LOSSY:
                return stored
            return sendable_syntax(stored, [ts.ExplicitVRLittleEndian]) or stored
        target = sendable_syntax(stored, [wanted])
        if target is not None:
            return target
    return None


def dicom_file(archive: Archive, stored: StoredInstance, target: str, ae_title: str) -> bytes:
    """The Part 10 file of ``stored`` in ``target``: the stored file when that is its syntax,
    else transcoded, with File Meta Information pypacs writes (archive/outgoing.py).

    Raises:
        TranscodeError: the instance cannot be converted.
    """
    out = archive.outgoing(stored, [target], Form.FILE, source_ae_title=ae_title)
    return bytes(out.data) if isinstance(out.data, memoryview) else out.data


class _Sender:
    """The bytes of each instance in the syntax chosen for its stored one."""

    def __init__(self, archive: Archive, targets: dict[str, str | None], ae_title: str) -> None:
        self.archive = archive
        self.targets = targets
        self.ae_title = ae_title

    def __call__(self, stored: StoredInstance) -> tuple[str, bytes] | None:
        target = self.targets.get(stored.transfer_syntax_uid)
        if target is None:
            return None
        return target, dicom_file(self.archive, stored, target, self.ae_title)


_CHUNK = 256 * 1024


def _parts(
    first: tuple[str, bytes] | None,
    retrieval: Retrieval,
    stack: ExitStack,
    send: _Sender,
    boundary: str,
) -> Iterator[bytes]:
    """One part per instance, one instance in memory at a time; small parts are joined into
    chunks of about 256 KiB (each chunk costs a thread hop and an ASGI send).

    An instance that cannot be sent whole after the status line went out ends the body
    with a part that says so (the one JSON error shape), and without the closing delimiter:
    the connection is closed, so that no client takes the answer for complete."""
    pending: list[bytes] = []
    size = 0
    with stack:
        sent: tuple[str, bytes] | None = first
        while sent is not None:
            target, body = sent
            pending += (part_head(boundary, f"{DICOM}; transfer-syntax={target}"), body)
            pending.append(part_tail())
            size += len(body)
            if size >= _CHUNK:
                yield b"".join(pending)
                pending, size = [], 0
            try:
                sent = _next(retrieval, send)
            except TranscodeError as exc:
                yield b"".join([*pending, *_failure_part(boundary, exc)])
                raise
    pending.append(closing(boundary))
    yield b"".join(pending)


def _failure_part(boundary: str, exc: TranscodeError) -> list[bytes]:
    error = {"error": {"status": 406, "code": "cannot-transcode", "message": str(exc)}}
    return [part_head(boundary, "application/json"), json.dumps(error).encode(), part_tail()]


def _next(retrieval: Retrieval, send: _Sender) -> tuple[str, bytes] | None:
    for stored in retrieval.instances:
        try:
            sent = send(stored)
        except TranscodeError as exc:
            # Before the first part this is an error answer (retrieve_endpoint); later an
            # error part ends the body (_parts): never an instance with less in it.
            log.error("WADO-RS: %s cannot be sent: %s", stored.sop_instance_uid, exc)
            raise
        if sent is not None:
            return sent
    return None


def _targets(
    entity: EntityRef, retrieval: Retrieval, plan: DicomPlan, ranges: list[MediaRange]
) -> tuple[dict[str, str | None], list[str]]:
    """The syntax to send for each stored one, and the stored ones left out.

    Raises:
        HttpProblem: 404 when nothing is stored under the entity, 406 when nothing
            stored can be sent acceptably.
    """
    if retrieval.count == 0:
        raise not_found(f"no {entity}")
    stored = {syntax for _, syntax in retrieval.syntaxes}
    targets = {s: target_syntax(s, plan.syntaxes) for s in stored}
    refused = sorted(s for s, t in targets.items() if t is None)
    if len(refused) == len(targets):
        raise not_acceptable(
            f"{entity} is stored as {', '.join(sorted(stored))}, which pypacs cannot send "
            f"as any of: {describe(ranges)}"
        )
    return targets, refused


def retrieve_endpoint(archive: Archive, options: WebOptions, base: str) -> Any:
    async def retrieve(request: Request) -> Response:
        entity: EntityRef = entity_of(request)
        ranges = acceptable(request)
        plan = dicom_plan(ranges, entity.level is Level.IMAGE)
        retrieval, stack = await run_in_threadpool(entered, archive.retrieve(entity.query()))
        try:
            targets, refused = _targets(entity, retrieval, plan, ranges)
            send = _Sender(archive, targets, options.ae_title)
            if not plan.multipart:
                stored = await run_in_threadpool(next, retrieval.instances)
                sent = await run_in_threadpool(send, stored)
                assert sent is not None  # its syntax has a target, or _targets refused
                await run_in_threadpool(stack.close)
                return Response(sent[1], media_type=f"{DICOM}; transfer-syntax={sent[0]}")
            first = await run_in_threadpool(_next, retrieval, send)
        except BaseException:
            await run_in_threadpool(stack.close)
            raise
        boundary = new_boundary()
        response = StreamingResponse(
            iterate_in_threadpool(_parts(first, retrieval, stack, send, boundary)),
            status_code=206 if refused else 200,
            media_type=related_type(boundary, DICOM),
        )
        if refused:
            # Some instances are left out (PS3.18 10.4.3: 206 Partial Content); the
            # Warning (RFC 7234 5.5) says which.
            text = f"instances stored as {', '.join(refused)} are left out: none acceptable"
            response.raw_headers.append(
                (b"warning", f"299 {service_url(request, base)}: {text}".encode())
            )
        return response

    return retrieve


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    study = f"{base}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"
    retrieve = retrieve_endpoint(archive, options, base)
    metadata = metadata_endpoint(archive, base)
    return [
        *(Route(path, retrieve, methods=["GET"]) for path in (study, series, instance)),
        *(
            Route(f"{path}/metadata", metadata, methods=["GET"])
            for path in (study, series, instance)
        ),
        *frames.routes(archive, instance, base),
        *rendered.routes(archive, options, (study, series, instance)),
    ]
