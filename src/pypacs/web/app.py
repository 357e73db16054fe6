"""create_app(archive, options): the ASGI application and its routes table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import pypacs
from pypacs.archive import Archive
from pypacs.audit import Auditor
from pypacs.remote.export import Exporter, NoExporter
from pypacs.remote.jobs import Jobs
from pypacs.remote.registry import Peers
from pypacs.web import openapi, page
from pypacs.web.admin import api as admin
from pypacs.web.admin import session
from pypacs.web.dicomweb import delete, qido, stow, wado, wadouri
from pypacs.web.http.audit import AuditTrail, SecurityEvents
from pypacs.web.http.auth import Authenticate, BearerVerifier
from pypacs.web.http.cors import CrossOrigin, normalized_origins
from pypacs.web.http.errors import EXCEPTION_HANDLERS
from pypacs.web.http.origin import SameOriginOnly
from pypacs.web.http.ratelimit import FailedLogins
from pypacs.web.http.urls import PublicAddress
from pypacs.web.options import WebOptions
from pypacs.web.page import viewer

# PS3.18 8.2: every DICOMweb resource lives under one base URL.
DICOMWEB_BASE = "/dicom-web"


def create_app(
    archive: Archive,
    options: WebOptions,
    *,
    on_ready: Callable[[], None] | None = None,
    peers: Peers | None = None,
    exporter: Exporter | None = None,
    jobs: Jobs | None = None,
    auditor: Auditor | None = None,
    verifier: BearerVerifier | None = None,
) -> Starlette:
    """The HTTP side of pypacs: DICOMweb under /dicom-web, the admin API under /api.

    ``verifier`` checks bearer tokens when ``[auth] mode = "oidc"`` (web/http/oidc.py).
    """

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

    failures = FailedLogins(options.auth.max_failed_logins)  # shared by Basic, Bearer, form
    events = SecurityEvents(auditor)  # log-ins, log-outs, refusals (web/http/audit.py)
    routes: list[BaseRoute] = [
        Route("/api/health", health),
        *session.routes(archive.accounts, options, failures, events),
        *admin.routes(archive, peers or Peers(), exporter or NoExporter(), "/api", jobs),
        *openapi.routes(DICOMWEB_BASE, "/api"),
        *qido.routes(archive, options, DICOMWEB_BASE),
        *stow.routes(archive, options, DICOMWEB_BASE),
        *delete.routes(archive, options, DICOMWEB_BASE),
        *wado.routes(archive, options, DICOMWEB_BASE),
        *wadouri.routes(archive, options, ""),  # PS3.18 9: at the server's root
        # The OHIF viewer at /viewer/, when installed (web/page/viewer.py).
        *viewer.routes(Path(options.viewer_root), DICOMWEB_BASE, "/api"),
    ]
    cors = [Middleware(CrossOrigin, origins=options.cors_origins)] if options.cors_origins else []
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        # A state-changing request from another site's page is refused (web/origin.py).
        # Then who the request acts for and whether its role allows it (web/roles.py).
        middleware=[
            # Pages of [web] cors_origins may call /dicom-web and /api (web/http/cors.py);
            # outermost, so that preflights and refusals carry the CORS headers too.
            *cors,
            Middleware(SameOriginOnly, allowed=normalized_origins(options.cors_origins)),
            Middleware(
                Authenticate,
                options=options.auth,
                accounts=archive.accounts,
                verifier=verifier,
                trusted_proxies=options.trusted_proxies,
                failures=failures,
                events=events,
            ),
        ],
    )
    # Every absolute URL the routes write starts at this address (web/urls.py).
    app.state.public_address = PublicAddress.of(options)
    if auditor is not None and auditor.enabled:
        # Outermost: it sees every answer, refusals too, and who the request acted for.
        app.add_middleware(AuditTrail, auditor=auditor, events=events)
    # The web page's files answer what no route takes; as a route at "/" they would also
    # take a method a route does not allow, which then gets 404 instead of 405.
    app.router.default = page.files()
    return app
