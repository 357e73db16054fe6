"""The installed OHIF Viewer (web/page/ohif.py) at ``/viewer/``, and ``GET /api/viewer``,
which tells the web page whether it is there and how to open a study in it.

The build expects to sit at the site's root; here it sits below ``<prefix>/viewer/``:
index.html is answered with its absolute references and ``window.PUBLIC_URL`` moved below
that path (the app's router and its webpack runtime read PUBLIC_URL), and ``app-config.js``
is generated for pypacs' own DICOMweb at the request's public address (web/http/urls.py).
Same origin, so no CORS, and the page's session cookie rides along with every fetch.

Every answer carries the headers that make the page cross-origin isolated (HTML Living
Standard 7.1.3: COOP ``same-origin`` and COEP ``require-corp``): OHIF's decoders need
SharedArrayBuffer, which browsers give only to such pages.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from stat import S_ISREG
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from pypacs.web.http.errors import HttpProblem
from pypacs.web.http.urls import public_root
from pypacs.web.page import ohif

PREFIX = "/viewer"
# OHIF's route that opens studies by their UIDs (its "viewer" mode), below PREFIX.
STUDY_PATH = "/viewer?StudyInstanceUIDs={study}"
SERIES_PATH = STUDY_PATH + "&initialSeriesInstanceUID={series}"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    # Fetch 3.2.1 (CORP): the files are for pypacs' own pages only.
    "Cross-Origin-Resource-Policy": "same-origin",
}
_PUBLIC_URL = re.compile(r'window\.PUBLIC_URL\s*=\s*"/"')
_ROOT_REFERENCE = re.compile(r'(\s(?:href|src)=")/(?!/)')


def routes(root: Path, dicomweb_base: str, admin_base: str = "/api") -> list[BaseRoute]:
    """``/viewer/`` and ``{admin_base}/viewer``, over the viewers installed under ``root``."""

    async def about(request: Request) -> JSONResponse:
        found = await run_in_threadpool(ohif.installed, root)
        if found is None:
            raise _not_installed()
        base = _path_prefix(request) + PREFIX
        return JSONResponse(
            {
                "installed": True,
                "version": found.version,
                "url": base + "/",
                "study_url": base + STUDY_PATH,
                "series_url": base + SERIES_PATH,
            }
        )

    return [
        Route(f"{admin_base}/viewer", about, methods=["GET"]),
        Mount(PREFIX, app=ViewerFiles(root, dicomweb_base)),
    ]


class ViewerFiles:
    """ASGI app of the viewer's files, below the mount at PREFIX."""

    def __init__(self, root: Path, dicomweb_base: str) -> None:
        self.root = root
        self.dicomweb_base = dicomweb_base
        self._static: dict[Path, StaticFiles] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The mount appended PREFIX to root_path; the public address is the app's.
        root_path = scope.get("root_path", "")
        request = Request({**scope, "root_path": root_path.removesuffix(PREFIX)})
        if request.method not in ("GET", "HEAD"):
            raise HttpProblem(
                405,
                "method-not-allowed",
                f"{request.method} {request.url.path}: the viewer's files answer GET and HEAD",
            )
        found = await run_in_threadpool(ohif.installed, self.root)
        if found is None:
            raise _not_installed()
        path = scope["path"][len(root_path) :].lstrip("/")
        response = await self._answer(request, found.folder, path)
        await response(scope, receive, _isolated(send))

    async def _answer(self, request: Request, folder: Path, path: str) -> Response:
        if path in ("", "index.html"):
            return await self._index(request, folder)
        if path == "app-config.js":
            body = json.dumps(app_config(request, self.dicomweb_base), indent=2)
            # Depends on the request's address: not to be reused for another.
            return Response(
                f"window.config = {body};\n",
                media_type="text/javascript",
                headers={"Cache-Control": "no-cache"},
            )
        static = self._static.get(folder) or self._static.setdefault(
            folder, StaticFiles(directory=folder)
        )
        full, stat = await run_in_threadpool(static.lookup_path, path)
        if stat is not None and S_ISREG(stat.st_mode) and path != ohif.MARKER:
            return static.file_response(full, stat, request.scope)
        if "." not in path.rsplit("/", 1)[-1]:
            # A route of the app (/viewer/viewer, /viewer/segmentation, ...): its page.
            return await self._index(request, folder)
        raise HttpProblem(404, "not-found", f"{request.url.path} is no file of the viewer")

    async def _index(self, request: Request, folder: Path) -> Response:
        text = await run_in_threadpool((folder / "index.html").read_text, encoding="utf-8")
        base = _path_prefix(request) + PREFIX + "/"
        text = _PUBLIC_URL.sub(lambda _m: f"window.PUBLIC_URL={json.dumps(base)}", text)
        text = _ROOT_REFERENCE.sub(lambda m: m.group(1) + html.escape(base), text)
        return Response(text, media_type="text/html", headers={"Cache-Control": "no-cache"})


def app_config(request: Request, dicomweb_base: str) -> dict[str, Any]:
    """OHIF's configuration (its ``window.config``) for pypacs' DICOMweb at the request's
    public address."""
    root = public_root(request)
    dicomweb = root + dicomweb_base
    return {
        "name": "pypacs",
        "routerBasename": _path_prefix(request) + PREFIX,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "defaultDataSourceName": "pypacs",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "pypacs",
                "configuration": {
                    "friendlyName": "pypacs",
                    "name": "pypacs",
                    # PS3.18 9: WADO-URI is at the server's root (web/dicomweb/wadouri.py).
                    "wadoUriRoot": root + "/wado",
                    "qidoRoot": dicomweb,
                    "wadoRoot": dicomweb,
                    # PS3.18 8.3.4: includefield is supported by QIDO-RS here.
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    # Fuzzy matching is off (PS3.18 8.3.4.1); "*" and "?" are matched.
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "supportsReject": False,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                    "dicomUploadEnabled": False,
                },
            }
        ],
    }


def _not_installed() -> HttpProblem:
    return HttpProblem(
        404,
        "viewer-not-installed",
        f"the OHIF viewer {ohif.VERSION} is not installed: run pypacs viewer install",
    )


def _path_prefix(request: Request) -> str:
    """The path of the public root ("" or "/pacs", say), without a trailing slash."""
    return urlsplit(public_root(request)).path.rstrip("/")


def _isolated(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(k.lower().encode(), v.encode()) for k, v in ISOLATION_HEADERS.items()]
            message = {**message, "headers": headers}
        await send(message)

    return sending
