"""CORS for DICOMweb and the admin API: pages of the origins in ``[web] cors_origins`` (a
viewer served elsewhere) may call them with credentials; nobody else gets a CORS header.

Off by default: without configured origins the middleware is not installed at all. With
them, under ``/dicom-web`` and ``/api`` (Fetch standard, "CORS protocol"):

- a request whose ``Origin`` is one of them gets ``Access-Control-Allow-Origin`` naming it
  (never ``*``, which credentials forbid), ``Access-Control-Allow-Credentials: true`` and
  the response headers its script may read (``Access-Control-Expose-Headers``);
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from one of them is
  answered here, before authentication (a preflight carries no credentials), with the
  methods and request headers allowed;
- every answer there says ``Vary: Origin``, so that a cache keeps one per origin;
- any other origin's request goes on as if there were no CORS at all: no header, and its
  preflight reaches the routes (which answer 405).

Starlette's CORSMiddleware is not used: it adds Allow-Credentials and Expose-Headers to
answers for any origin and answers every preflight itself.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pypacs.web.http.origin import origin_of

# Where a page of a configured origin may call: DICOMweb (PS3.18 8.2) and the admin API.
CORS_PREFIXES = ("/dicom-web", "/api")
ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Accept"
# Response headers pypacs writes that a viewer reads: QIDO-RS/WADO-RS warnings (PS3.18
# 8.3.5.1), where a STOW-RS result or a job is (Content-Location, Location).
EXPOSED_HEADERS = "Warning, Content-Location, Location"
PREFLIGHT_MAX_AGE = 600  # seconds a browser may keep a preflight's answer


def normalized_origins(origins: tuple[str, ...]) -> frozenset[str]:
    """The configured origins, serialized as browsers send them (RFC 6454 6.1)."""
    return frozenset(o for o in (origin_of(text) for text in origins) if o is not None)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class CrossOrigin:
    """ASGI middleware: the CORS answers for the allowed origins; outermost, so that even
    a refusal (401, 403) reaches the page that asked."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = normalized_origins(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(_under(scope["path"], p) for p in CORS_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin is not None and origin_of(origin) in self.origins
        if allowed and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await Response(status_code=204, headers=self._preflight(origin or ""))(
                scope, receive, send
            )
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.add_vary_header("Origin")
                if allowed:
                    answer["Access-Control-Allow-Origin"] = origin or ""
                    answer["Access-Control-Allow-Credentials"] = "true"
                    answer["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def _preflight(origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
