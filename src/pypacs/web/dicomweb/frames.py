"""WADO-RS frames and bulk data: pixel data frame by frame, uncompressed or as stored, and
the bulk data elements metadata points at (PS3.18 Table 10.4.1-1, 8.7.3.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pack_bits
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive
from pypacs.archive.framereader import StoredFrames
from pypacs.archive.outgoing import sendable_syntax
from pypacs.archive.pixels import frame_array, number_of_frames
from pypacs.archive.transcode import transcode
from pypacs.errors import TranscodeError
from pypacs.model.attributes import BULK_DATA_VRS
from pypacs.model.syntax import COMPRESSED_MEDIA, LOSSY, MEDIA_OF_SYNTAX
from pypacs.query.entity import EntityRef
from pypacs.web.dicomweb.resources import (
    entity_of,
    load_pixels,
    locate,
    open_pixels,
    path_of,
    service_url,
)
from pypacs.web.http.errors import bad_parameter, not_acceptable, not_found
from pypacs.web.http.multipart import closing, new_boundary, part_head, part_tail, related_type
from pypacs.web.http.negotiate import ANY_SYNTAX, MediaRange, acceptable, describe

OCTET_STREAM = "application/octet-stream"
_UNCOMPRESSED = ts.ExplicitVRLittleEndian  # PS3.18 Table 8.7.3-4
_PIXEL_DATA = 0x7FE00010
_CODEC_ERRORS = (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError)


@dataclass(frozen=True)
class FramePlan:
    """How frames go out: as stored (compressed) or uncompressed little endian."""

    media: str
    syntax: str
    as_stored: bool


def _decodable(stored: str) -> bool:
    """Whether frames of an instance stored in ``stored`` can go out uncompressed."""
    return sendable_syntax(stored, [_UNCOMPRESSED]) is not None


_DECODED = FramePlan(OCTET_STREAM, _UNCOMPRESSED, False)


def _held(stored: str) -> FramePlan:
    """Frames as held: compressed in their media type, or uncompressed."""
    media = MEDIA_OF_SYNTAX.get(stored)
    return _DECODED if media is None else FramePlan(media, stored, True)


def _plan_for(stored: str, r: MediaRange) -> FramePlan | None:
    held, wanted = _held(stored), r.transfer_syntax
    if r.media in ("*", "*/*"):
        if wanted == ANY_SYNTAX or stored in LOSSY or not _decodable(stored):
            # PS3.18 8.7.3.3: held only lossy compressed (or undecodable): sent as held.
            return held
        return _DECODED
    if r.media in ("application/*", OCTET_STREAM):
        if wanted in (None, _UNCOMPRESSED, ts.ImplicitVRLittleEndian):
            return _DECODED if _decodable(stored) else None
        if wanted in (ANY_SYNTAX, stored):
            # The octets of the frames as held, their syntax in the part's media type.
            return FramePlan(OCTET_STREAM, stored, True) if held.as_stored else _DECODED
        return None
    if r.media in ("image/*", "video/*"):
        return held if held.as_stored and r.matches(held.media) else None
    syntaxes = COMPRESSED_MEDIA.get(r.media)
    if syntaxes is None:
        return None
    allowed = syntaxes if wanted == ANY_SYNTAX else (wanted or syntaxes[0],)
    return FramePlan(r.media, stored, True) if stored in allowed else None


def frame_plan(stored: str, ranges: Sequence[MediaRange]) -> FramePlan:
    """PS3.18 8.7.3.3, Tables 8.7.3-4/-5: the first acceptable media range pypacs can
    serve frames of an instance stored in ``stored`` as.

    Raises:
        HttpProblem: 406 when there is none.
    """
    for r in ranges:
        plan = _plan_for(stored, r)
        if plan is not None:
            return plan
    held = MEDIA_OF_SYNTAX.get(stored, OCTET_STREAM)
    raise not_acceptable(
        f"pixel data is held as {held} (transfer syntax {stored}); it can be sent as "
        f"{OCTET_STREAM}{' or ' + held if held != OCTET_STREAM else ''}, not as "
        f"{describe(ranges)}"
    )


def parse_frames(text: str) -> list[int]:
    """PS3.18 Table 10.4.1-1 {frames}: a comma-separated list of distinct frame numbers from 1.

    Raises:
        HttpProblem: 400 naming ``frames`` when the list is malformed.
    """
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not item.isascii() or int(item) < 1:
            raise bad_parameter("frames", f"{text!r} is not a list of frame numbers from 1")
        if int(item) in numbers:
            raise bad_parameter("frames", f"frame {int(item)} is listed twice in {text!r}")
        numbers.append(int(item))
    return numbers


def _little_endian(arr: np.ndarray[Any, Any], ds: Dataset) -> bytes:
    if int(ds.BitsAllocated) == 1:
        return pack_bits(arr.ravel())
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def uncompressed_frame(ds: Dataset, stored: str, index: int) -> bytes:
    """Frame ``index`` (from 0) as uncompressed little endian bytes (Table 8.7.3-4).

    Raises:
        TranscodeError: the pixel data cannot be decoded.
    """
    syntax = ts.UID(stored)
    bits = int(ds.BitsAllocated)
    if (
        not syntax.is_compressed
        and syntax.is_little_endian
        and bits % 8 == 0
        and ds.get("PhotometricInterpretation") != "YBR_FULL_422"
    ):
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        return bytes(ds.PixelData[index * size : (index + 1) * size])
    return _little_endian(frame_array(ds, index), ds)


def stored_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` (from 0) of encapsulated pixel data, as held (PS3.5 A.4); ``ds`` comes
    from ``load``, one fragment per frame."""
    try:
        return get_frame(ds.PixelData, index, number_of_frames=number_of_frames(ds))
    except _CODEC_ERRORS as exc:
        raise TranscodeError(f"cannot find frame {index + 1} in the pixel data: {exc}") from exc


def frame_bytes(ds: Dataset, stored: str, index: int, plan: FramePlan) -> bytes:
    return stored_frame(ds, index) if plan.as_stored else uncompressed_frame(ds, stored, index)


def read_frame(source: StoredFrames, index: int, plan: FramePlan) -> bytes:
    """Frame ``index`` (from 0) as ``plan`` says, read alone from the stored instance."""
    if plan.as_stored:
        return source.frame(index)
    ds, at = source.image(index)
    return uncompressed_frame(ds, str(source.syntax), at)


def _pixels(
    archive: Archive, entity: EntityRef, numbers: list[int], ranges: list[MediaRange]
) -> tuple[FramePlan, StoredFrames]:
    """The plan and the open instance, each frame asked for found (PS3.18 8.7.3.3: every
    one there, or an error before the body)."""
    stored = locate(archive, entity)
    plan = frame_plan(stored.transfer_syntax_uid, ranges)
    source = open_pixels(archive, stored)
    try:
        if _PIXEL_DATA not in source.header:
            raise not_found(f"{entity} has no pixel data")
        count = source.count
        beyond = [n for n in numbers if n > count]
        if beyond:
            raise not_found(f"{entity} has {count} frame(s); there is no frame {beyond[0]}")
        for number in numbers:
            source.locate(number - 1)
    except BaseException:
        source.close()
        raise
    return plan, source


def _frame_parts(
    frame: Callable[[int], bytes], numbers: list[int], plan: FramePlan, boundary: str, url: str
) -> Iterator[bytes]:
    for number in numbers:
        yield part_head(boundary, f"{plan.media}; transfer-syntax={plan.syntax}", f"{url}/{number}")
        yield frame(number - 1)
        yield part_tail()
    yield closing(boundary)


def _closing(parts: Iterator[bytes], source: StoredFrames) -> Iterator[bytes]:
    with source:
        yield from parts


def frames_endpoint(archive: Archive, base: str) -> Any:
    async def frames(request: Request) -> Response:
        entity = entity_of(request)
        numbers = parse_frames(request.path_params["frames"])
        ranges = acceptable(request)
        plan, source = await run_in_threadpool(_pixels, archive, entity, numbers, ranges)
        boundary = new_boundary()
        url = service_url(request, base) + path_of(entity) + "/frames"
        frame = partial(read_frame, source, plan=plan)
        parts = _closing(_frame_parts(frame, numbers, plan, boundary, url), source)
        return StreamingResponse(
            iterate_in_threadpool(parts), media_type=related_type(boundary, plan.media)
        )

    return frames


def _bulk_parts(
    archive: Archive, entity: EntityRef, tag: int, ranges: list[MediaRange], url: str, boundary: str
) -> tuple[str, list[bytes]]:
    """The multipart body of one bulk data element (PS3.18 8.7.3.3, Table 10.4.1-1); ``url``
    is the instance's, the element's is ``url/bulkdata/ggggeeee``."""
    stored = locate(archive, entity)
    syntax: str = stored.transfer_syntax_uid
    if syntax == ts.ExplicitVRBigEndian:  # bulk data is little endian
        ds, syntax = transcode(archive.read_instance(stored), _UNCOMPRESSED), _UNCOMPRESSED
    else:
        ds = load_pixels(archive, stored)
    if tag not in ds:
        raise not_found(f"{entity} has no element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    if tag == _PIXEL_DATA:
        plan = frame_plan(syntax, ranges)
        count = number_of_frames(ds)
        if plan.as_stored:  # one part per frame, each in the media type as held
            numbers = list(range(1, count + 1))
            frame = partial(frame_bytes, ds, syntax, plan=plan)
            return plan.media, list(_frame_parts(frame, numbers, plan, boundary, url + "/frames"))
        body = b"".join(uncompressed_frame(ds, syntax, i) for i in range(count))
    else:
        elem = ds[tag]
        if elem.VR not in BULK_DATA_VRS or not isinstance(elem.value, bytes):
            raise not_found(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not bulk data")
        frame_plan(_UNCOMPRESSED, ranges)  # 406 unless octet-stream is acceptable
        body = elem.value
    location = f"{url}/bulkdata/{tag:08X}"
    head = part_head(boundary, f"{OCTET_STREAM}; transfer-syntax={_UNCOMPRESSED}", location)
    return OCTET_STREAM, [head, body, part_tail(), closing(boundary)]


def bulkdata_endpoint(archive: Archive, base: str) -> Any:
    async def bulkdata(request: Request) -> Response:
        entity = entity_of(request)
        text = request.path_params["tag"]
        if len(text) != 8 or not all(c in "0123456789abcdefABCDEF" for c in text):
            raise bad_parameter("tag", f"{text!r} is not a tag (8 hexadecimal digits)")
        tag = int(text, 16)
        ranges = acceptable(request)
        boundary = new_boundary()
        url = service_url(request, base) + path_of(entity)
        media, parts = await run_in_threadpool(
            _bulk_parts, archive, entity, tag, ranges, url, boundary
        )
        return Response(b"".join(parts), media_type=related_type(boundary, media))

    return bulkdata


def routes(archive: Archive, instance: str, base: str) -> list[BaseRoute]:
    return [
        Route(f"{instance}/frames/{{frames}}", frames_endpoint(archive, base), methods=["GET"]),
        Route(f"{instance}/bulkdata/{{tag}}", bulkdata_endpoint(archive, base), methods=["GET"]),
    ]
