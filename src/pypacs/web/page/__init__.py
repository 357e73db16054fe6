"""The web page: static files in the package (no build step), served for what no route takes."""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"


def files() -> StaticFiles:
    """The page's files. As the router's default (not a route at "/"), a method a route does
    not allow still gets 405 there, not 404."""
    return _Page(directory=STATIC, html=True)


class _Page(StaticFiles):
    """The web page's files. Another method than GET or HEAD on a path that is no file is
    404, as on any unknown path (StaticFiles answers 405 before it looks)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            _, found = await run_in_threadpool(self.lookup_path, path)
            if found is None:
                raise HTTPException(status_code=404)
        return await super().get_response(path, scope)
