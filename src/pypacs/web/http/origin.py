"""Cross-site requests are refused before they start work (CSRF).

A web page elsewhere can make a browser send a "simple" request (RFC 9110 safe methods
aside: a POST of ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data``) to pypacs without asking first, and the browser would carry it out
even though the page cannot read the answer. Two rules stop that:

- a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` header names another
  origin than the server's own public one (web/urls.py) or one of ``[web] cors_origins``
  (web/http/cors.py) is refused with 403 before any route sees it. Browsers send
  ``Origin`` with every such request; clients that are not browsers (curl, DICOMweb
  libraries, modalities) send none and are not affected;
- the admin API's POSTs take ``application/json`` only (415 otherwise), a type no page may
  send to another origin without a CORS preflight, which pypacs grants only to
  ``[web] cors_origins``; STOW-RS takes ``multipart/related`` only, likewise not
  CORS-safelisted (Fetch standard, "CORS-safelisted request-header").

The one cookie pypacs sets, the web page's session (web/admin/session.py), is
``SameSite=Strict``, so a browser does not send it with a request another site starts; and
web/http/auth.py refuses a state-changing request that a session cookie authenticates
without an ``Origin`` of our own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pypacs.web.http.errors import HttpProblem, problem_response
from pypacs.web.http.urls import public_root
from pypacs.web.options import DEFAULT_PORTS

# RFC 9110 9.2.1: the methods that are not safe, i.e. that may change state.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def origin_of(url: str) -> str | None:
    """The serialized origin (RFC 6454 6.1) of an http(s) URL or Origin header: lower-case
    scheme and host, the port only when it is not the scheme's default; None for anything
    else (``null``, an opaque origin, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class SameOriginOnly:
    """ASGI middleware: a state-changing request from a foreign Origin gets 403; the
    ``allowed`` origins (``[web] cors_origins``) are not foreign."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.allowed = allowed  # serialized origins (RFC 6454 6.1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            origin = Headers(scope=scope).get("origin")
            if origin is not None:
                own = origin_of(public_root(Request(scope)))
                if origin_of(origin) != own and origin_of(origin) not in self.allowed:
                    message = (
                        f"a {scope['method']} from the origin {origin!r} is refused: only "
                        f"pages of {own} may send one (cross-site request)"
                    )
                    response = problem_response(403, "cross-origin", message, "Origin")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


JSON = "application/json"


def require_json(request: Request) -> None:
    """Refuse a request body that is not declared as JSON.

    Raises:
        HttpProblem: 415 naming Content-Type.
    """
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != JSON:
        shown = f"{declared!r}" if declared else "none"
        raise HttpProblem(
            415,
            "unsupported-media-type",
            f"this request takes Content-Type: {JSON} (given: {shown})",
            parameter="Content-Type",
        )
