"""create_app(archive): the ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pypacs
from pypacs.archive import Archive


def create_app(archive: Archive, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The HTTP side of pypacs; for now a status endpoint."""

    async def health(_request: Request) -> JSONResponse:
        stats = await run_in_threadpool(archive.statistics)
        return JSONResponse(
            {
                "status": "ok",
                "version": pypacs.__version__,
                "patients": stats.patients,
                "studies": stats.studies,
                "series": stats.series,
                "instances": stats.instances,
                "bytes": stats.bytes,
            }
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield

    return Starlette(routes=[Route("/api/health", health)], lifespan=lifespan)
