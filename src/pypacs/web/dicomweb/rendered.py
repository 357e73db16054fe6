"""WADO-RS rendered resources and thumbnails (PS3.18 Tables 10.4.1-3 and
10.4.1-4, 8.3.5.1, 8.7.4)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from pydicom.dataset import Dataset
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pypacs.archive import Archive, Retrieval
from pypacs.archive.framereader import StoredFrames
from pypacs.archive.pixels import number_of_frames
from pypacs.query.entity import EntityRef
from pypacs.web.dicomweb.frames import parse_frames
from pypacs.web.dicomweb.render import (
    FUNCTIONS,
    RENDERED_TYPES,
    Region,
    Rendering,
    Window,
    has_pixels,
    render,
)
from pypacs.web.dicomweb.rendercache import RenderCache
from pypacs.web.dicomweb.renderlimits import MAX_VIEWPORT, RenderBudget, budget_for
from pypacs.web.dicomweb.resources import entered, entity_of, locate, middle, open_pixels
from pypacs.web.http.errors import HttpProblem, bad_parameter, not_acceptable, not_found
from pypacs.web.http.multipart import closing, new_boundary, part_head, part_tail, related_type
from pypacs.web.http.negotiate import MediaRange, acceptable, describe
from pypacs.web.options import WebOptions

THUMBNAIL_BOUND = 128  # a thumbnail fits in 128 x 128 unless the viewport says otherwise
# PS3.18 Table 8.7.4-1: application/pdf is a rendered media type (of the Text category); an
# Encapsulated PDF instance is rendered as its document.
PDF = "application/pdf"


def rendered_media(ranges: list[MediaRange]) -> str:
    """The first acceptable rendered media type; image/jpeg for a wildcard.

    Raises:
        HttpProblem: 406 when neither image/jpeg nor image/png is acceptable.
    """
    for r in ranges:
        for media in RENDERED_TYPES:
            if r.matches(media):
                return media
    raise not_acceptable(
        f"rendered images are sent as {' or '.join(RENDERED_TYPES)}; accepted: {describe(ranges)}"
    )


def _number(text: str, parameter: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise bad_parameter(parameter, f"{what} {text!r} is not a decimal number")
    return value


def parse_window(text: str) -> Window:
    """PS3.18 8.3.5.1.4: ``center,width,function``.

    Raises:
        HttpProblem: 400 naming ``window``.
    """
    values = [v.strip() for v in text.split(",")]
    if len(values) not in (2, 3):
        raise bad_parameter("window", f"{text!r} is not center,width,function")
    center = _number(values[0], "window", "center")
    width = _number(values[1], "window", "width")
    function = values[2].lower() if len(values) == 3 else "linear"
    if function not in FUNCTIONS:
        raise bad_parameter("window", f"function {values[2]!r} is not one of {FUNCTIONS}")
    if width < 1 if function == "linear" else width <= 0:
        least = "at least 1" if function == "linear" else "above 0"
        raise bad_parameter("window", f"width {values[1]} of a {function} window must be {least}")
    return Window(center, width, function)


def _integer(text: str, parameter: str, low: int | None = None) -> int:
    text = text.strip()
    body = text[1:] if text[:1] == "-" else text
    if not body.isdigit() or not body.isascii() or (low is not None and int(text) < low):
        floor = "" if low is None else f" of at least {low}"
        raise bad_parameter(parameter, f"{text!r} is not an integer{floor}")
    return int(text)


def parse_viewport(text: str, *, region: bool) -> tuple[tuple[int, int], Region | None]:
    """PS3.18 8.3.5.1.3: ``vw,vh`` and, for rendered resources, ``,sx,sy,sw,sh``.

    Raises:
        HttpProblem: 400 naming ``viewport``.
    """
    values = text.split(",")
    if len(values) not in ((2, 6) if region else (2,)):
        shape = "vw,vh[,sx,sy,sw,sh]" if region else "vw,vh"
        raise bad_parameter("viewport", f"{text!r} is not {shape}")
    size = (_integer(values[0], "viewport", 1), _integer(values[1], "viewport", 1))
    if max(size) > MAX_VIEWPORT:
        raise bad_parameter(
            "viewport", f"{text!r} is larger than {MAX_VIEWPORT} pixels a side, pypacs' largest"
        )
    if len(values) == 2:
        return size, None
    x, y = _integer(values[2], "viewport", 0), _integer(values[3], "viewport", 0)
    width, height = _integer(values[4], "viewport"), _integer(values[5], "viewport")
    if width == 0 or height == 0:
        raise bad_parameter("viewport", f"the source region of {text!r} is empty")
    return size, Region(x, y, width, height)


def parse_quality(text: str) -> int:
    """PS3.18 8.3.5.1.2: 1 (lowest) to 100 (best).

    Raises:
        HttpProblem: 400 naming ``quality``.
    """
    quality = _integer(text, "quality", 1)
    if quality > 100:
        raise bad_parameter("quality", f"{text!r} is not an integer from 1 to 100")
    return quality


def accepts_pdf(ranges: list[MediaRange]) -> bool:
    return any(not r.multipart and r.matches(PDF) for r in ranges)


def rendering_of(
    params: QueryParams, ranges: list[MediaRange], *, thumbnail: bool, document: bool = False
) -> Rendering:
    """The rendering a request asks for; unknown parameters are ignored (PS3.18 8.3).
    With ``document``, a request that accepts application/pdf but no image type gets a
    rendering of media type application/pdf (only an encapsulated PDF answers it)."""
    try:
        media = rendered_media(ranges)
    except HttpProblem:
        if not (document and accepts_pdf(ranges)):
            raise
        media = PDF
    if thumbnail:
        viewport = params.get("viewport")
        size = parse_viewport(viewport, region=False)[0] if viewport else None
        return Rendering(media, size=size, bound=THUMBNAIL_BOUND)
    rendering = Rendering(media)
    if (window := params.get("window")) is not None:
        rendering = replace(rendering, window=parse_window(window))
    if (viewport := params.get("viewport")) is not None:
        size, region = parse_viewport(viewport, region=True)
        rendering = replace(rendering, size=size, region=region)
    if (quality := params.get("quality")) is not None:
        rendering = replace(rendering, quality=parse_quality(quality))
    return rendering


def _check_region(ds: Dataset, region: Region | None) -> None:
    """A source region lies within the image (PS3.18 8.3.5.1.3: a region *of* the image).

    Raises:
        HttpProblem: 400 naming ``viewport``.
    """
    if region is None:
        return
    x0, x1 = sorted((region.x, region.x + region.width))
    y0, y1 = sorted((region.y, region.y + region.height))
    columns, rows = int(ds.Columns), int(ds.Rows)
    if x0 < 0 or y0 < 0 or x1 > columns or y1 > rows:
        raise bad_parameter(
            "viewport",
            f"the source region {region.x},{region.y},{region.width},{region.height} is not "
            f"within the {columns}x{rows} image",
        )


class _Renderer:
    """Renders frames within the process's budget (web/renderlimits.py)."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget

    def image(
        self, source: StoredFrames, entity: EntityRef, index: int, rendering: Rendering
    ) -> bytes:
        """Frame ``index`` (from 0) rendered, read alone from the stored instance."""
        header = source.header
        if not has_pixels(header):
            raise not_acceptable(f"{entity} has no image: pypacs renders images only")
        _check_region(header, rendering.region)
        with self.budget.decoding(header):
            ds, at = source.image(index)
            return render(ds, at, rendering)


def _frame_indexes(ds: Dataset, entity: EntityRef, frames: list[int]) -> list[int]:
    count = number_of_frames(ds)
    beyond = [n for n in frames if n > count]
    if beyond:
        raise not_found(f"{entity} has {count} frame(s); there is no frame {beyond[0]}")
    return [n - 1 for n in frames]


def encapsulated_pdf(ds: Dataset) -> bytes | None:
    """The document of an Encapsulated PDF instance (PS3.3 C.24.2), without the pad byte
    its Encapsulated Document Length (0042,0015) leaves out; None for any other instance."""
    mime = str(ds.get("MIMETypeOfEncapsulatedDocument") or "").strip().lower()
    document = ds.get("EncapsulatedDocument")
    if mime != PDF or not isinstance(document, bytes) or has_pixels(ds):
        return None
    length = ds.get("EncapsulatedDocumentLength")
    return document[: int(length)] if isinstance(length, int) and length > 0 else document


def _instance_images(
    renderer: _Renderer,
    archive: Archive,
    entity: EntityRef,
    frames: list[int] | None,
    rendering: Rendering,
    pdf: bool,
    stack: ExitStack,
) -> tuple[str, bytes, Iterator[bytes], int]:
    """The media type and rendered frames of one instance (its first frame when none are
    named): the first rendered now, the others as they are asked for, and how many there
    are. An encapsulated PDF, with ``pdf`` acceptable, is its document. The instance stays
    open until ``stack`` is closed."""
    source = stack.enter_context(open_pixels(archive, locate(archive, entity)))
    ds = source.header
    document = encapsulated_pdf(ds) if frames is None else None
    if document is not None:
        if not pdf:
            raise not_acceptable(f"{entity} is an encapsulated PDF: rendered as {PDF} only")
        return PDF, document, iter(()), 1
    if rendering.media == PDF:
        raise not_acceptable(
            f"{entity} is no PDF document: rendered images are sent as "
            f"{' or '.join(RENDERED_TYPES)}"
        )
    indexes = _frame_indexes(ds, entity, frames or [1])
    first = renderer.image(source, entity, indexes[0], rendering)
    rest = (renderer.image(source, entity, i, rendering) for i in indexes[1:])
    return rendering.media, first, rest, len(indexes)


def _thumbnail(
    renderer: _Renderer,
    cache: RenderCache,
    archive: Archive,
    entity: EntityRef,
    frames: list[int] | None,
    rendering: Rendering,
) -> bytes:
    """PS3.18 10.4.3.3.4: one small image, without patient information: the middle
    instance of a series (of a study's first series), the middle frame of a multi-frame
    instance, or the frame named. Kept once made (web/rendercache.py)."""
    if entity.instance is None:
        entity, stored = middle(archive, entity)
    else:
        stored = locate(archive, entity)
    key = (stored.blob_key, tuple(frames or ()), rendering)
    image = cache.get(key)
    if image is None:
        with open_pixels(archive, stored) as source:
            ds = source.header
            index = _frame_indexes(ds, entity, frames)[0] if frames else number_of_frames(ds) // 2
            image = renderer.image(source, entity, index, rendering)
        cache.put(key, image)
    return image


def _rendered_parts(
    renderer: _Renderer,
    archive: Archive,
    retrieval: Retrieval,
    entity: EntityRef,
    rendering: Rendering,
) -> Iterator[bytes]:
    """Each image instance under a study or series rendered (its first frame)."""
    for stored in retrieval.instances:
        with open_pixels(archive, stored) as source:
            if has_pixels(source.header):
                yield renderer.image(source, entity, 0, rendering)


def _multipart(
    images: Iterator[bytes], first: bytes, media: str, boundary: str, stack: ExitStack
) -> Iterator[bytes]:
    with stack:
        image: bytes | None = first
        while image is not None:
            yield part_head(boundary, media)
            yield image
            yield part_tail()
            image = next(images, None)
        yield closing(boundary)


def _frames_of(request: Request) -> list[int] | None:
    text = request.path_params.get("frames")
    return None if text is None else parse_frames(text)


def rendered_endpoint(archive: Archive, renderer: _Renderer) -> Any:
    async def rendered(request: Request) -> Response:
        entity = entity_of(request)
        frames = _frames_of(request)
        ranges = acceptable(request)
        document = entity.instance is not None and frames is None
        rendering = rendering_of(request.query_params, ranges, thumbnail=False, document=document)
        media = rendering.media
        if entity.instance is not None:
            pdf = document and accepts_pdf(ranges)
            opened = ExitStack()
            try:
                media, first, rest, count = await run_in_threadpool(
                    _instance_images, renderer, archive, entity, frames, rendering, pdf, opened
                )
            except BaseException:
                await run_in_threadpool(opened.close)
                raise
            if count == 1:
                await run_in_threadpool(opened.close)
                return Response(first, media_type=media)
            boundary = new_boundary()
            chunks = _multipart(rest, first, media, boundary, opened)
            return StreamingResponse(
                iterate_in_threadpool(chunks), media_type=related_type(boundary, media)
            )
        retrieval, stack = await run_in_threadpool(entered, archive.retrieve(entity.query()))
        parts = _rendered_parts(renderer, archive, retrieval, entity, rendering)
        try:
            image = await run_in_threadpool(next, parts, None)
            if image is None:
                raise not_acceptable(f"{entity} holds no image: pypacs renders images only")
        except BaseException:
            await run_in_threadpool(stack.close)
            raise
        boundary = new_boundary()
        chunks = _multipart(parts, image, media, boundary, stack)
        return StreamingResponse(
            iterate_in_threadpool(chunks), media_type=related_type(boundary, media)
        )

    return rendered


def thumbnail_endpoint(archive: Archive, renderer: _Renderer, cache: RenderCache) -> Any:
    async def thumbnail(request: Request) -> Response:
        entity = entity_of(request)
        frames = _frames_of(request)
        if frames is not None and len(frames) != 1:
            raise bad_parameter("frames", "a thumbnail shows one frame")
        rendering = rendering_of(request.query_params, acceptable(request), thumbnail=True)
        image = await run_in_threadpool(
            _thumbnail, renderer, cache, archive, entity, frames, rendering
        )
        return Response(image, media_type=rendering.media)

    return thumbnail


def routes(archive: Archive, options: WebOptions, paths: tuple[str, str, str]) -> list[BaseRoute]:
    """``paths``: the study, series and instance resource templates."""
    renderer = _Renderer(
        budget_for(options.render_max_frame_bytes, options.render_max_bytes_in_flight)
    )
    rendered = rendered_endpoint(archive, renderer)
    thumbnail = thumbnail_endpoint(archive, renderer, RenderCache())
    frames = f"{paths[2]}/frames/{{frames}}"
    return [
        *(Route(f"{p}/rendered", rendered, methods=["GET"]) for p in (*paths, frames)),
        *(Route(f"{p}/thumbnail", thumbnail, methods=["GET"]) for p in (*paths, frames)),
    ]
