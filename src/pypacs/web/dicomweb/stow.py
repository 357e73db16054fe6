"""STOW-RS: store instances sent over HTTP (PS3.18 10.5).

Each part of a ``multipart/related; type="application/dicom"`` body is a PS3.10 file: its
content goes to an anonymous file on the archive's disk as it arrives (``Archive.spool``),
and once the part has ended the archive stores it as received from there, parsing only its
header: memory holds a buffer of a part, never a whole one. (A part that lacks the 128-byte
preamble, "DICM" or the whole File Meta Information gets them, see ``_Incoming``; the data
set's bytes never change.) ``[web] stow_max_part_bytes`` and ``stow_max_parts`` bound one
part and the number of parts, ``stow_max_bytes`` the whole body.
The answer goes out once the whole body has been read and every part stored or refused, so
a 200 or 202 acknowledges only durable instances (DESIGN rule 1).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO

import pydicom
from pydicom import uid as ts
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive, Outcome, StoreResult
from pypacs.archive.ingest import Identity, identify
from pypacs.archive.part10 import PREAMBLE, file_meta
from pypacs.errors import IndexUnavailable, InvalidInstance, StoreError
from pypacs.model.outcomes import status_for
from pypacs.model.sop import STORAGE_TRANSFER_SYNTAXES
from pypacs.model.status import Status
from pypacs.web.dicomweb.resources import path_uid, service_url
from pypacs.web.http.audit import PATIENTS, RECEIVED
from pypacs.web.http.errors import HttpProblem, bad_parameter
from pypacs.web.http.multipart import (
    Event,
    MultipartError,
    PartHead,
    boundary_of,
    media_type,
    read_events,
)
from pypacs.web.http.negotiate import JSON_TYPES, choose
from pypacs.web.options import WebOptions

log = logging.getLogger("pypacs.web.dicomweb.stow")

DICOM = "application/dicom"

# FailureReason (0008,1197) and WarningReason (0008,1196) values (PS3.18 I.2.2 Table I.2-2,
# I.2.1 Table I.2-1) are the model's statuses; a failure's is the one C-STORE would answer.
# Tags of the Store Instances Response Module (PS3.18 I.1 Table I.1-1) and its items.
_RETRIEVE_URL = "00081190"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_CLASS = "00081150"
_REFERENCED_SOP_INSTANCE = "00081155"
_WARNING_REASON = "00081196"
_FAILURE_REASON = "00081197"


# The UIDs a bare data set must name to be given File Meta Information (see ``_Incoming``).
_SOP_TAGS = [0x00080016, 0x00080018]


def _text(value: object) -> str | None:
    return None if value is None else (str(value).strip() or None)


def _instances(n: int) -> str:
    return f"{n} instance" if n == 1 else f"{n} instances"


@dataclass
class _Outcomes:
    """The Store Instances Response Module being built (PS3.18 I.1)."""

    root: str  # the DICOMweb base URL, absolute
    referenced: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: int = 0
    studies: set[str] = field(default_factory=set)
    # For the audit trail (web/http/audit.py): instances stored per study and SOP class,
    # and the Patient IDs they name.
    received: dict[str, dict[str, int]] = field(default_factory=dict)
    patients: set[str] = field(default_factory=set)

    def stored(self, result: StoreResult) -> None:
        study, series, sop_instance = (
            result.study_instance_uid,
            result.series_instance_uid,
            result.sop_instance_uid,
        )
        url = None
        if study and series:
            url = f"{self.root}/studies/{study}/series/{series}/instances/{sop_instance}"
            self.studies.add(study)
        classes = self.received.setdefault(study, {})
        classes[result.sop_class_uid] = classes.get(result.sop_class_uid, 0) + 1
        if result.patient_id:
            self.patients.add(result.patient_id)
        item = _reference(result.sop_class_uid, sop_instance)
        duplicate = result.outcome is Outcome.DUPLICATE
        item[_RETRIEVE_URL] = _value("UR", url)
        if duplicate:
            item[_WARNING_REASON] = _value("US", int(Status.ALREADY_STORED))
            self.warnings += 1
        self.referenced.append(item)

    def failure(self, ident: Identity, reason: Status) -> None:
        item = _reference(ident.sop_class, ident.sop_instance)
        item[_FAILURE_REASON] = _value("US", int(reason))
        self.failed.append(item)

    @property
    def status(self) -> int:
        # PS3.18 10.5.3.1 Table 10.5.3-1: 200 all stored; 202 some stored, with warnings or
        # failures for others; 409 none stored (also for a mixture of reasons).
        if not self.referenced:
            return 409
        return 202 if self.failed or self.warnings else 200

    def module(self) -> dict[str, Any]:
        # RetrieveURL of the study (Type 2): empty unless what was stored is one study.
        study = next(iter(self.studies)) if len(self.studies) == 1 else None
        body: dict[str, Any] = {
            _RETRIEVE_URL: _value("UR", f"{self.root}/studies/{study}" if study else None)
        }
        if self.failed:
            body[_FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": self.failed}
        if self.referenced:
            body[_REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": self.referenced}
        return body


def _value(vr: str, value: object | None) -> dict[str, Any]:
    """One DICOM JSON element (PS3.18 F.2.2); no ``Value`` when empty."""
    return {"vr": vr} if value is None else {"vr": vr, "Value": [value]}


def _reference(sop_class: str | None, sop_instance: str | None) -> dict[str, Any]:
    # PS3.3 Table 10-11 SOP Instance Reference Macro; empty when the part was unreadable.
    return {
        _REFERENCED_SOP_CLASS: _value("UI", sop_class),
        _REFERENCED_SOP_INSTANCE: _value("UI", sop_instance),
    }


def _boundary(request: Request) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` body.

    Raises:
        HttpProblem: 415 for any other media type, 400 when the boundary is missing.
    """
    content_type = request.headers.get("content-type", "")
    kind, params = media_type(content_type)
    part_type = media_type(params.get("type", DICOM))[0]
    if kind != "multipart/related" or part_type != DICOM:
        # PS3.18 10.5.1.4 also allows metadata and bulk data parts (type
        # application/dicom+xml or +json): pypacs stores PS3.10 instances only.
        raise HttpProblem(
            415,
            "unsupported-media-type",
            f'STOW-RS takes multipart/related; type="{DICOM}" (one PS3.10 instance per part); '
            f"the request is {content_type or 'without Content-Type'}",
            parameter="Content-Type",
        )
    try:
        return boundary_of(content_type)
    except MultipartError as exc:
        raise bad_parameter("Content-Type", str(exc)) from exc


class _TooLarge(Exception):
    pass


class _PartTooLarge(Exception):
    pass


class _TooManyParts(Exception):
    pass


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body, up to ``limit`` bytes: parts complete within them are stored."""
    received = 0
    async for chunk in request.stream():
        if received + len(chunk) > limit:
            yield chunk[: limit - received]
            raise _TooLarge
        received += len(chunk)
        yield chunk


def _too_large(what: str, stored: int) -> HttpProblem:
    kept = f"; stored before it: {_instances(stored)}" if stored else ""
    return HttpProblem(413, "too-large", f"{what}{kept}")


def _body_limit(limit: int) -> str:
    return f"the request body is larger than {limit} bytes ([web] stow_max_bytes)"


_SPOOL_BUFFER = 1 << 20  # content held before it is written to the part's file
_FRAMED = 132  # bytes that tell how a part is framed: a preamble's 128, then "DICM"


class _Incoming:
    """One part being received: its content written to a spool file a buffer at a time, with
    the framing a PS3.10 file needs put in front where only that is missing (PS3.10 7.1):

    - no preamble, the File Meta Information group (0002) first, as pydicom writes a data
      set without preamble (and so dicomweb-client sends it): preamble and "DICM" added;
    - "DICM" then the meta group, without the 128 bytes before it: the preamble added;
    - a bare data set, no meta information at all: meta information made by pypacs, when
      the data set's first element tells its transfer syntax (implicit or explicit VR little
      endian, explicit VR big endian) and it names its SOP Class and Instance UIDs.

    Anything else is left for the archive to refuse. A part of another media type is read
    and dropped, never written.
    """

    def __init__(self, archive: Archive, head: PartHead) -> None:
        self.archive = archive
        self.content_type = head.content_type
        self.wanted = self.content_type in (None, DICOM)
        self.fp: BinaryIO | None = archive.spool() if self.wanted else None
        self.size = 0
        self.pending = bytearray()
        self.framing: bool | None = None  # None: undecided; False: maybe a bare data set
        self.added: str | None = None
        self.error: OSError | None = None

    def take(self, data: bytes) -> bool:
        """Keep a piece of the content; True when the buffer should be written out."""
        self.size += len(data)
        if self.fp is not None:
            self.pending += data
        return len(self.pending) >= _SPOOL_BUFFER

    def flush(self) -> None:
        if self.fp is None or self.error is not None:
            self.pending.clear()
            return
        try:
            if self.framing is None:
                head = bytes(self.pending[:_FRAMED])
                prefix, self.added = _prefix(head)
                self.framing = self.added is not None or head[128:132] == b"DICM"
                self.fp.write(prefix)
            self.fp.write(self.pending)
        except OSError as exc:  # the disk is full: the part fails alone, as out of resources
            self.error = exc
        self.pending.clear()

    def finish(self) -> None:
        """The part has ended: write what is left, and the meta information of a bare data
        set (its content copied once more behind it)."""
        self.flush()
        if self.fp is None or self.error is not None or self.framing:
            return
        made = _bare_meta(self.fp)
        if made is None:
            return
        meta, self.added = made
        framed = self.archive.spool()
        try:
            framed.write(meta)
            self.fp.seek(0)
            shutil.copyfileobj(self.fp, framed, _SPOOL_BUFFER)
        except OSError as exc:
            framed.close()
            self.error = exc
            return
        self.fp.close()
        self.fp = framed

    def close(self) -> None:
        if self.fp is not None:
            self.fp.close()


def _prefix(head: bytes) -> tuple[bytes, str | None]:
    """What goes before a part whose first bytes are ``head``, and its name (None: nothing)."""
    if head[128:132] == b"DICM":
        return b"", None
    if head[:4] == b"DICM" and head[4:6] == b"\x02\x00":
        return bytes(128), "preamble"
    if head[:2] == b"\x02\x00":
        return PREAMBLE, "preamble and DICM prefix"
    return b"", None


class _Stow:
    def __init__(self, archive: Archive, options: WebOptions, base: str) -> None:
        self.archive = archive
        self.options = options
        self.base = base

    async def store(self, request: Request) -> Response:
        study = request.path_params.get("study")
        if study is not None:
            path_uid(study, "study")
        boundary = _boundary(request)
        # PS3.18 10.5.2: the Store Instances Response Module in DICOM JSON (application/json
        # for a client that knows only that); XML, which the standard names too, is 406.
        answer_type = choose(request, JSON_TYPES, "the Store Instances Response")
        options = self.options
        limit = options.stow_max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(_body_limit(limit), 0)
        outcomes = _Outcomes(service_url(request, self.base))
        client = request.client.host if request.client else "?"
        try:
            events = read_events(_limited(request, limit), boundary)
            await self._receive(events, study, outcomes, client)
        except _TooLarge:
            log.info("STOW-RS from %s: body past %d bytes", client, limit)
            raise _too_large(_body_limit(limit), len(outcomes.referenced)) from None
        except _PartTooLarge:
            log.info("STOW-RS from %s: a part past %d bytes", client, options.stow_max_part_bytes)
            what = f"a part is larger than {options.stow_max_part_bytes} bytes"
            raise _too_large(
                f"{what} ([web] stow_max_part_bytes)", len(outcomes.referenced)
            ) from None
        except _TooManyParts:
            log.info("STOW-RS from %s: more than %d parts", client, options.stow_max_parts)
            what = f"the request holds more than {options.stow_max_parts} parts"
            raise _too_large(f"{what} ([web] stow_max_parts)", len(outcomes.referenced)) from None
        except MultipartError as exc:
            log.info("STOW-RS from %s: malformed body: %s", client, exc)
            kept = len(outcomes.referenced)
            stored = f" (stored before the fault: {_instances(kept)})" if kept else ""
            raise HttpProblem(400, "bad-multipart", f"{exc}{stored}") from exc
        except ClientDisconnect:
            log.info("STOW-RS from %s: the client left before the end of its request", client)
            return Response(status_code=400)
        if not outcomes.referenced and not outcomes.failed:
            raise HttpProblem(400, "bad-multipart", "the request holds no instance")
        log.info(
            "STOW-RS from %s: %d stored, %d failed",
            client,
            len(outcomes.referenced),
            len(outcomes.failed),
        )
        request.scope[RECEIVED] = outcomes.received
        request.scope[PATIENTS] = outcomes.patients
        return JSONResponse(outcomes.module(), outcomes.status, media_type=answer_type)

    async def _receive(
        self, events: AsyncIterator[Event], study: str | None, outcomes: _Outcomes, client: str
    ) -> None:
        """Spool each part as it arrives and store it once it has ended.

        Raises:
            _PartTooLarge, _TooManyParts: a part or the number of parts is past its limit.
        """
        part: _Incoming | None = None
        count = 0
        try:
            async for event in events:
                if isinstance(event, PartHead):
                    count += 1
                    if count > self.options.stow_max_parts:
                        raise _TooManyParts
                    part = await run_in_threadpool(_Incoming, self.archive, event)
                elif event is None:
                    assert part is not None
                    await run_in_threadpool(part.finish)
                    incoming, part = part, None
                    try:
                        await self._store(incoming, study, outcomes, client)
                    finally:
                        await run_in_threadpool(incoming.close)
                else:
                    assert part is not None
                    if part.take(event):
                        await run_in_threadpool(part.flush)
                    if part.size > self.options.stow_max_part_bytes:
                        raise _PartTooLarge
        finally:
            if part is not None:
                await run_in_threadpool(part.close)

    async def _store(
        self, part: _Incoming, study: str | None, outcomes: _Outcomes, client: str
    ) -> None:
        if part.fp is None:
            log.info("STOW-RS from %s: a part of type %s refused", client, part.content_type)
            outcomes.failure(Identity(), Status.CANNOT_UNDERSTAND)
            return
        fp = part.fp
        if part.error is not None:
            ident = await run_in_threadpool(identify, fp)
            name = ident.sop_instance or "a part"
            log.error("STOW-RS from %s: %s not received: %s", client, name, part.error)
            outcomes.failure(ident, Status.OUT_OF_RESOURCES)
            return
        # The archive checks the study and the transfer syntax in its one parse of the part:
        # the same syntaxes as C-STORE accepts (model/sop.py).
        store = partial(
            self.archive.store_instance,
            fp,
            expected_study=study,
            allowed_syntaxes=STORAGE_TRANSFER_SYNTAXES,
        )
        try:
            result = await run_in_threadpool(store)
        except InvalidInstance as exc:
            ident = Identity(exc.sop_class, exc.sop_instance)
            _log_framing(part, client, ident.sop_instance)
            log.info("STOW-RS from %s: %s refused: %s", client, _named(ident.sop_instance), exc)
            outcomes.failure(ident, status_for(exc))
            return
        except (StoreError, IndexUnavailable) as exc:  # OutOfResources is a StoreError
            ident = await run_in_threadpool(identify, fp)
            _log_framing(part, client, ident.sop_instance)
            log.error("STOW-RS from %s: %s not stored: %s", client, ident.sop_instance, exc)
            outcomes.failure(ident, status_for(exc))
            return
        _log_framing(part, client, result.sop_instance_uid)
        outcomes.stored(result)


def _named(sop_instance: str | None) -> str:
    return sop_instance or "a part"


def _log_framing(part: _Incoming, client: str, sop_instance: str | None) -> None:
    if part.added is not None:
        log.info("STOW-RS from %s: %s given %s", client, _named(sop_instance), part.added)


# The transfer syntaxes pydicom tells apart from a data set's first element, by its
# (is implicit VR, is little endian) encoding.
_BARE_SYNTAXES: dict[tuple[bool | None, bool | None], ts.UID] = {
    (True, True): ts.ImplicitVRLittleEndian,
    (False, True): ts.ExplicitVRLittleEndian,
    (False, False): ts.ExplicitVRBigEndian,
}


def _bare_meta(fp: BinaryIO) -> tuple[bytes, str] | None:
    """File Meta Information for a bare data set (see ``_Incoming``) and its description;
    None when the content is not one pypacs can frame."""
    try:
        fp.seek(0)
        ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True, specific_tags=_SOP_TAGS)
        syntax = _BARE_SYNTAXES.get(ds.original_encoding)
        sop_class = _text(ds.get("SOPClassUID"))
        sop_instance = _text(ds.get("SOPInstanceUID"))
    except Exception:  # pydicom raises many types on input that is not DICOM
        return None
    if syntax is None or not _meta_uid(sop_class) or not _meta_uid(sop_instance):
        return None
    assert sop_class is not None and sop_instance is not None
    meta = file_meta(sop_class, sop_instance, syntax)
    return bytes(meta), f"file meta information ({syntax.name})"


def _meta_uid(value: str | None) -> bool:
    """Whether ``value`` can be written as a UI value of the meta information (PS3.5 9.1);
    whether it is a well-formed UID is for the archive to judge, as for any instance."""
    return value is not None and value.isascii() and value.isprintable() and len(value) <= 64


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    """POST {base}/studies and {base}/studies/{study} (PS3.18 10.5.1.1 Table 10.5.1-1)."""
    store = _Stow(archive, options, base).store
    return [
        Route(f"{base}/studies", store, methods=["POST"]),
        Route(f"{base}/studies/{{study}}", store, methods=["POST"]),
    ]
