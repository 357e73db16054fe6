"""WADO-URI: one instance named by query parameters, as DICOM or rendered as JPEG or PNG
(PS3.18 chapter 9)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive, StoredInstance
from pypacs.archive.pixels import number_of_frames
from pypacs.model.uid import is_acceptable_uid
from pypacs.query.entity import EntityRef
from pypacs.web.dicomweb.render import RENDERED_TYPES, Region, Rendering, Window, has_pixels, render
from pypacs.web.dicomweb.renderlimits import MAX_VIEWPORT, RenderBudget, budget_for
from pypacs.web.dicomweb.resources import locate, open_pixels
from pypacs.web.dicomweb.wado import DEFAULT_SYNTAX, DICOM, dicom_file, target_syntax
from pypacs.web.http.errors import HttpProblem, bad_parameter
from pypacs.web.http.negotiate import MediaRange, parse_accept
from pypacs.web.options import WebOptions

# PS3.18 9.1.2: the instance is named by all three UIDs.
_UIDS = (("studyUID", "study"), ("seriesUID", "series"), ("objectUID", "instance"))
# PS3.18 9.5.1: parameters of rendered responses only.
_RENDERING = (
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "imageQuality",
)
# Defined by PS3.18 9.x, not offered by pypacs: refused rather than silently ignored.
_UNSUPPORTED = {
    "anonymize": "pypacs does not de-identify instances",
    "annotation": "pypacs does not burn annotations into rendered images",
    "presentationUID": "pypacs does not apply presentation states",
    "presentationSeriesUID": "pypacs does not apply presentation states",
}


@dataclass(frozen=True)
class UriRequest:
    entity: EntityRef
    ranges: list[MediaRange] | None  # None: the default for the instance
    transfer_syntax: str | None
    params: QueryParams
    ranges_from: str = "contentType"  # or the Accept header, when contentType is absent


def parse_request(params: QueryParams, accept: list[str]) -> UriRequest:
    """PS3.18 9.1.2, 9.4.2: the parameters every request needs, checked.

    Raises:
        HttpProblem: 400 naming the parameter at fault.
    """
    request_type = params.get("requestType")
    if request_type is None:
        raise bad_parameter("requestType", "requestType=WADO is required")
    if request_type != "WADO":
        raise bad_parameter("requestType", f"requestType {request_type!r} is not WADO")
    uids: dict[str, str] = {}
    for name, key in _UIDS:
        value = params.get(name)
        if not value:
            raise bad_parameter(name, f"{name} is required")
        if not is_acceptable_uid(value):
            raise bad_parameter(name, f"{name} {value!r} is not a UID (PS3.5 9.1)")
        uids[key] = value
    for name, reason in _UNSUPPORTED.items():
        if name in params:
            raise bad_parameter(name, f"{name} is not supported: {reason}")
    content = params.getlist("contentType")
    ranges = parse_accept(content, "contentType") if content else None
    ranges_from = "contentType"
    if ranges is None and any(h.strip() for h in accept):  # PS3.18 9.3: else the Accept
        header = parse_accept(accept)
        ranges = None if all(r.media == "*/*" for r in header) else header
        ranges_from = "Accept"
    syntax = params.get("transferSyntax")
    if syntax is not None and not is_acceptable_uid(syntax):
        raise bad_parameter("transferSyntax", f"{syntax!r} is not a UID (PS3.5 9.1)")
    entity = EntityRef(uids["study"], uids["series"], uids["instance"])
    return UriRequest(entity, ranges, syntax, params, ranges_from)


def _media(request: UriRequest, ds: Dataset) -> str:
    """The Selected Media Type: application/dicom, or a rendered type for an image."""
    image = has_pixels(ds)
    if request.ranges is None:  # PS3.18 9.3: image/jpeg when nothing is asked for
        return RENDERED_TYPES[0] if image else DICOM
    for r in request.ranges:
        if r.media == DICOM:
            return DICOM
        for media in RENDERED_TYPES:
            if image and r.matches(media):
                return media
        if r.matches(DICOM):
            return DICOM
    offered = f"{DICOM}, {' or '.join(RENDERED_TYPES)}" if image else DICOM
    raise HttpProblem(
        406,
        "not-acceptable",
        f"this instance is sent as {offered}; {request.ranges_from} names none of them",
        parameter=request.ranges_from,
    )


def _dicom(archive: Archive, stored: StoredInstance, request: UriRequest, ae: str) -> bytes:
    for name in _RENDERING:
        if name in request.params:
            raise bad_parameter(name, f"{name} applies to rendered images, not {DICOM}")
    wanted = request.transfer_syntax
    preferences = (wanted,) if wanted is not None else (DEFAULT_SYNTAX,)
    target = target_syntax(stored.transfer_syntax_uid, preferences)
    if target is None:  # PS3.18 9.4.2.4: a valid but unsupported transfer syntax is 406
        raise HttpProblem(
            406,
            "not-acceptable",
            f"the instance is stored as {stored.transfer_syntax_uid}; pypacs cannot send it "
            f"as {wanted}",
            parameter="transferSyntax",
        )
    return dicom_file(archive, stored, target, ae)


def _decimal(params: QueryParams, name: str) -> float:
    try:
        return float(params[name])
    except ValueError as exc:
        raise bad_parameter(name, f"{name} {params[name]!r} is not a decimal number") from exc


def _positive(params: QueryParams, name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or int(text) < 1:
        raise bad_parameter(name, f"{name} {text!r} is not a positive integer")
    return int(text)


def _region(text: str, ds: Dataset) -> Region:
    """PS3.18 9.5.1 region: x1,y1,x2,y2 as fractions of the image, top left to bottom right."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise bad_parameter("region", f"{text!r} is not x1,y1,x2,y2") from exc
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        raise bad_parameter("region", f"{text!r} is not within 0.0-1.0, left/top first")
    columns, rows = int(ds.Columns), int(ds.Rows)
    left, top = round(x1 * columns), round(y1 * rows)
    right, bottom = max(round(x2 * columns), left + 1), max(round(y2 * rows), top + 1)
    return Region(left, top, right - left, bottom - top)


def _size(params: QueryParams) -> tuple[int, int] | None:
    """PS3.18 9.5.1 rows and columns: the box the image fits in (either may be left out)."""
    rows, columns = _positive(params, "rows"), _positive(params, "columns")
    for name, side in (("rows", rows), ("columns", columns)):
        if side is not None and side > MAX_VIEWPORT:
            raise bad_parameter(name, f"{name} {side} is more than {MAX_VIEWPORT}, pypacs' largest")
    if rows is None and columns is None:
        return None
    # The side left out follows the aspect ratio, within the largest side pypacs renders.
    return columns or MAX_VIEWPORT, rows or MAX_VIEWPORT


def _rendering(params: QueryParams, media: str, ds: Dataset) -> tuple[Rendering, int]:
    """The rendering the parameters ask for, and the frame index (PS3.18 9.5.1)."""
    if "transferSyntax" in params:
        raise bad_parameter("transferSyntax", f"transferSyntax applies to {DICOM} only")
    rendering = Rendering(media)
    size = _size(params)
    if size is not None:
        rendering = replace(rendering, size=size)
    if "region" in params:
        rendering = replace(rendering, region=_region(params["region"], ds))
    center, width = "windowCenter" in params, "windowWidth" in params
    if center != width:  # PS3.18 9.5.1: one without the other is an error
        missing = "windowWidth" if center else "windowCenter"
        raise bad_parameter(missing, "windowCenter and windowWidth go together")
    if center:
        window = Window(_decimal(params, "windowCenter"), _decimal(params, "windowWidth"))
        if window.width < 1:
            raise bad_parameter("windowWidth", "windowWidth must be at least 1")
        rendering = replace(rendering, window=window)
    quality = _positive(params, "imageQuality")
    if quality is not None:
        if quality > 100:
            raise bad_parameter("imageQuality", f"imageQuality {quality} is not from 1 to 100")
        rendering = replace(rendering, quality=quality)
    index = 0
    frame = _positive(params, "frameNumber")
    if frame is not None:
        count = number_of_frames(ds)
        if "NumberOfFrames" not in ds or frame > count:  # PS3.18 9.5.2
            raise bad_parameter("frameNumber", f"frame {frame} is not one of {count} frame(s)")
        index = frame - 1
    return rendering, index


def _answer(
    archive: Archive, request: UriRequest, ae: str, budget: RenderBudget
) -> tuple[bytes, str]:
    stored = locate(archive, request.entity)
    with open_pixels(archive, stored) as source:  # the header, and one frame when rendered
        ds = source.header
        media = _media(request, ds)
        if media == DICOM:
            return _dicom(archive, stored, request, ae), DICOM
        if request.transfer_syntax is not None:
            raise bad_parameter("transferSyntax", f"transferSyntax applies to {DICOM} only")
        rendering, index = _rendering(request.params, media, ds)
        with budget.decoding(ds):
            frame, at = source.image(index)  # frames found, not trusted (archive/pixels.py)
            return render(frame, at, rendering), media


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    """The one WADO-URI route, ``{base}/wado`` (PS3.18 9: parameters name the instance)."""

    budget = budget_for(options.render_max_frame_bytes, options.render_max_bytes_in_flight)

    async def wado(request: Request) -> Response:
        parsed = parse_request(request.query_params, request.headers.getlist("accept"))
        body, media = await run_in_threadpool(_answer, archive, parsed, options.ae_title, budget)
        return Response(body, media_type=media)

    endpoint: Any = wado
    return [Route(f"{base}/wado", endpoint, methods=["GET"])]
