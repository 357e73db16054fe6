"""Logging in and out of the web page, and the liveness probe.

``POST /api/session`` takes a name and password (a form or JSON) and sets the session
cookie; ``DELETE /api/session`` ends the session; ``GET /api/session`` names who the
request acts for; ``GET /login`` is the log-in page;
``GET /healthz`` says ``ok`` and nothing about the archive. All but ``GET /api/session``
are public (web/roles.py). Each log-in attempt and each log-out goes to the audit trail
(PS3.15 A.5.3.12, web/http/audit.py).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pypacs.archive.accounts import Accounts
from pypacs.web.http.audit import SecurityEvents
from pypacs.web.http.auth import (
    SESSION_COOKIE,
    client_address,
    cookies_of,
    principal_of,
    session_cookie_header,
    too_many_failures,
)
from pypacs.web.http.errors import HttpProblem, bad_parameter, problem_response
from pypacs.web.http.ratelimit import FailedLogins
from pypacs.web.http.urls import public_root
from pypacs.web.options import WebOptions, parse_networks
from pypacs.web.page import STATIC

_MAX_BODY = 8192  # a name and a password


def routes(
    accounts: Accounts | None,
    options: WebOptions,
    failures: FailedLogins,
    events: SecurityEvents | None = None,
) -> list[BaseRoute]:
    """The log-in page, the session resource and the liveness probe."""
    sessions = _Sessions(accounts, options, failures, events or SecurityEvents(None))
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/api/session", who_am_i, methods=["GET"]),
        Route("/api/session", sessions.log_in, methods=["POST"]),
        Route("/api/session", sessions.log_out, methods=["DELETE"]),
    ]


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def who_am_i(request: Request) -> JSONResponse:
    """Who the request acts for and how that was proven (the page shows it)."""
    principal = principal_of(request)
    if principal is None:  # unreachable: the route needs a role (web/roles.py)
        raise HttpProblem(401, "unauthenticated", "no credentials given")
    return JSONResponse(
        {"name": principal.name, "role": principal.role.value, "method": principal.method}
    )


async def login_page(_request: Request) -> FileResponse:
    return FileResponse(STATIC / "login.html", media_type="text/html")


class _Sessions:
    def __init__(
        self,
        accounts: Accounts | None,
        options: WebOptions,
        failures: FailedLogins,
        events: SecurityEvents,
    ) -> None:
        self.accounts = accounts
        self.options = options
        self.failures = failures
        self.events = events
        self.trusted = parse_networks(options.trusted_proxies)

    async def log_in(self, request: Request) -> Response:
        if self.accounts is None or self.options.auth.mode != "local":
            raise HttpProblem(
                404, "not-found", 'log-in with a password needs [auth] mode = "local"'
            )
        name, password = await _credentials(request)
        address = client_address(request.scope, self.trusted)
        wait = self.failures.retry_after(address, name)
        if wait is not None:
            return too_many_failures(wait)
        user = await run_in_threadpool(self.accounts.authenticate, name, password)
        self.events.login(request.scope, name, address, user is not None)
        if user is None:
            self.failures.failed(address, name)
            response = problem_response(401, "unauthenticated", "wrong user name or password")
            # Not Basic: the page's browser would prompt for a password itself.
            response.headers["WWW-Authenticate"] = 'Bearer realm="pypacs"'
            return response
        hours = self.options.auth.session_hours
        session_id = await run_in_threadpool(self.accounts.open_session, user.name, hours)
        response = JSONResponse({"name": user.name, "role": user.role.value})
        cookie = session_cookie_header(
            session_id, max_age=hours * 3600, secure=self._secure(request)
        )
        response.headers["Set-Cookie"] = cookie
        return response

    async def log_out(self, request: Request) -> Response:
        session_id = cookies_of(request.headers).get(SESSION_COOKIE)
        if session_id and self.accounts is not None:
            user = await run_in_threadpool(self.accounts.session_user, session_id)
            await run_in_threadpool(self.accounts.close_session, session_id)
            if user is not None:  # a log-out of a session that had ended is none
                address = client_address(request.scope, self.trusted)
                self.events.logout(user.name, address)
        response = Response(status_code=204)
        response.headers["Set-Cookie"] = session_cookie_header(
            "", max_age=0, secure=self._secure(request)
        )
        return response

    def _secure(self, request: Request) -> bool:
        # HTTPS here, or at a trusted proxy in front (X-Forwarded-Proto, web/urls.py).
        return self.options.https or public_root(request).startswith("https:")


async def _credentials(request: Request) -> tuple[str, str]:
    """The name and password of a form (application/x-www-form-urlencoded) or JSON body.

    Raises:
        HttpProblem: 415 for another body, 400 naming what is missing or malformed.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise HttpProblem(413, "too-large", f"a log-in is at most {_MAX_BODY} bytes")
    fields: dict[str, Any]
    if kind == "application/json":
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise bad_parameter("body", "the body is not JSON") from None
        if not isinstance(fields, dict):
            raise bad_parameter("body", 'the body is a JSON object {"name": …, "password": …}')
    elif kind == "application/x-www-form-urlencoded":
        # WHATWG URL "application/x-www-form-urlencoded parsing"; the first of a repeated name.
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise bad_parameter("body", "the form is not UTF-8") from None
        fields = {}
        for key, value in pairs:
            fields.setdefault(key, value)
    else:
        raise HttpProblem(
            415,
            "unsupported-media-type",
            "a log-in is application/json or application/x-www-form-urlencoded",
            parameter="Content-Type",
        )
    name, password = fields.get("name"), fields.get("password")
    if not isinstance(name, str) or not name:
        raise bad_parameter("name", "the user name is missing")
    if not isinstance(password, str) or not password:
        raise bad_parameter("password", "the password is missing")
    return name, password
