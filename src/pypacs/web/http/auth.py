"""Who a request acts for, and whether that role may do it: the one place of the HTTP port
that enforces ``[auth]``, as an ASGI middleware in front of every route.

- ``none``: every request acts for ``anonymous`` with the admin role, as pypacs always did.
- ``local``: HTTP Basic (RFC 7617) with a user's password, ``Authorization: Bearer`` (RFC
  6750) with an API token, or the web page's session cookie; all kept in the index
  (archive/accounts.py).
- ``oidc``: Bearer JWTs checked by the verifier of web/http/oidc.py; Basic is refused.

The role each path and method needs is web/roles.py's table. The Principal is left in
``scope["pypacs.principal"]`` for the routes and the audit trail. No credentials, or bad
ones: 401 with the challenges (RFC 7235 4.1); a role too low: 403; past ``[auth]
max_failed_logins`` failures from one address or for one name: 429.

The audit trail (web/http/audit.py) gets each failed Basic or Bearer credential as a failed
log-in; refusals (401, 403, 429) become Security Alerts there.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Mapping
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pypacs.archive.accounts import Accounts, User
from pypacs.errors import NotAuthenticated, NotAuthorized, PypacsError
from pypacs.model.access import Principal, Role
from pypacs.web.http.audit import ADDRESS, CLAIMED_USER, REASON, SecurityEvents
from pypacs.web.http.errors import on_problem, problem_response
from pypacs.web.http.origin import UNSAFE_METHODS
from pypacs.web.http.ratelimit import FailedLogins
from pypacs.web.http.urls import public_root
from pypacs.web.options import AuthOptions, Network, parse_networks
from pypacs.web.roles import role_needed

log = logging.getLogger("pypacs.web.auth")

PRINCIPAL = "pypacs.principal"  # the scope key routes read who a request acts for from
SESSION_COOKIE = "pypacs_session"
ANONYMOUS = Principal("anonymous", Role.ADMIN, "anonymous")
REALM = 'realm="pypacs"'
# Paths an API client uses: never redirected to the log-in page.
_API_PREFIXES = ("/dicom-web", "/api/", "/wado")


class BearerVerifier(Protocol):
    """What ``[auth] mode = "oidc"`` checks bearer tokens with (web/http/oidc.py)."""

    def principal(self, token: str) -> Principal:
        """Raises NotAuthenticated (401) or NotAuthorized (403)."""
        ...


def principal_of(request: Request) -> Principal | None:
    """Who the request acts for; None on a public route without credentials."""
    found = request.scope.get(PRINCIPAL)
    return found if isinstance(found, Principal) else None


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's IP address: the TCP peer's, or the one a trusted proxy appended last to
    X-Forwarded-For (the entries before it are the client's own word)."""
    client = scope.get("client")
    peer = client[0] if client else ""
    try:
        from_proxy = any(ipaddress.ip_address(peer) in net for net in trusted)
    except ValueError:
        from_proxy = False
    if from_proxy:
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return peer


def session_cookie_header(value: str, *, max_age: int, secure: bool, path: str = "/") -> str:
    """A Set-Cookie value for the session: HttpOnly, SameSite=Strict (RFC 6265bis 4.1.2.7),
    Secure when the page is served over HTTPS."""
    parts = [f"{SESSION_COOKIE}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly"]
    parts.append("SameSite=Strict")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class Authenticate:
    """ASGI middleware: authenticate, check the role, put the Principal in the scope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        options: AuthOptions,
        accounts: Accounts | None,
        verifier: BearerVerifier | None = None,
        trusted_proxies: tuple[str, ...] = (),
        failures: FailedLogins | None = None,
        events: SecurityEvents | None = None,
    ) -> None:
        self.app = app
        self.options = options
        self.accounts = accounts
        self.verifier = verifier
        self.trusted = parse_networks(trusted_proxies)
        self.failures = failures or FailedLogins(options.max_failed_logins)
        self.events = events or SecurityEvents(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.options.mode == "none":
            scope[PRINCIPAL] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"][len(scope.get("root_path", "")) :] or "/"
        needed = role_needed(method, path)
        scope[ADDRESS] = client_address(scope, self.trusted)
        if needed is None:  # public: credentials, if any, are not looked at here
            await self.app(scope, receive, send)
            return
        try:
            answer = await self._check(scope, method, path, needed)
        except PypacsError as exc:  # the index is unavailable, say: 503 in the one shape
            answer = await on_problem(Request(scope), exc)
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, _private(send))

    async def _check(self, scope: Scope, method: str, path: str, needed: Role) -> Response | None:
        """None when the request may go on (its Principal set), else the answer."""
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if authorization is None:
            found = await self._from_cookie(scope, method, path, headers)
        else:
            found = await self._from_authorization(scope, method, path, authorization)
        if isinstance(found, Response):
            return found
        if not found.role.allows(needed):
            scope[CLAIMED_USER] = found.name
            scope[REASON] = f"needs the {needed} role; {found.name!r} is {found.role}"
            return _forbidden(
                f"{method} {path} needs the {needed} role; {found.name!r} is {found.role}"
            )
        scope[PRINCIPAL] = found
        return None

    async def _from_cookie(
        self, scope: Scope, method: str, path: str, headers: Headers
    ) -> Principal | Response:
        """The web page's session, or where to send a request without credentials."""
        session_id = cookies_of(headers).get(SESSION_COOKIE)
        principal = await self._session(session_id) if session_id else None
        if principal is None:
            if _page_request(method, path, headers):
                return self._to_login(scope)
            if session_id:
                scope[REASON] = "an expired or unknown session"
                return self.challenge("the log-in has expired; log in again", basic=False)
            scope[REASON] = "no credentials given"
            return self.challenge("no credentials given")
        if method in UNSAFE_METHODS and not _same_origin_request(headers):
            scope[CLAIMED_USER] = principal.name
            scope[REASON] = "a state change by the session cookie without an Origin"
            # A cookie rides along with any request the browser makes; SameOriginOnly
            # refuses a foreign Origin, and this one a state change naming none.
            return problem_response(
                403,
                "cross-origin",
                f"a {method} authenticated by the session cookie must come from "
                "pypacs' own page (it names no Origin)",
                "Origin",
            )
        return principal

    async def _from_authorization(
        self, scope: Scope, method: str, path: str, authorization: str
    ) -> Principal | Response:
        """Basic or Bearer credentials, counted against the failed log-ins' limit."""
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme not in ("basic", "bearer"):
            scope[REASON] = f"the authorization scheme {scheme!r} is not accepted"
            return self.challenge(f"the authorization scheme {scheme!r} is not accepted")
        address = client_address(scope, self.trusted)
        name = _basic_name(credentials) if scheme == "basic" else None
        wait = self.failures.retry_after(address, name)
        if wait is not None:
            scope[CLAIMED_USER] = name or ""
            scope[REASON] = "too many failed log-ins"
            return too_many_failures(wait)
        # Audit (PS3.15 A.5.3.12 User Authentication is for log-in and log-out events):
        # Basic and Bearer credentials come with every request, so a good one is no log-in
        # of its own; it is recorded as the user of the access messages (web/http/audit.py),
        # not as one User Authentication message per request. A bad one is a failed log-in.
        try:
            if scheme == "basic":
                return await self._basic(credentials.strip())
            return await self._bearer(credentials.strip())
        except NotAuthenticated as exc:
            self.failures.failed(address, name)
            log.info("%s %s from %s: %s", method, path, address, exc.reason)
            self.events.login(scope, name or "unknown", address, False)
            return self.challenge(exc.reason, invalid_token=scheme == "bearer")
        except NotAuthorized as exc:
            scope[REASON] = exc.reason
            return _forbidden(exc.reason)

    async def _basic(self, credentials: str) -> Principal:
        if self.accounts is None or self.options.mode != "local":
            raise NotAuthenticated("HTTP Basic is not accepted here; send a bearer token")
        name, password = _basic_credentials(credentials)
        user = await run_in_threadpool(self.accounts.authenticate, name, password)
        if user is None:
            raise NotAuthenticated(f"wrong user name or password (user {name!r})")
        return _principal(user, "basic")

    async def _bearer(self, token: str) -> Principal:
        if not token:
            raise NotAuthenticated("the bearer token is empty")
        if self.options.mode == "oidc":
            if self.verifier is None:
                raise NotAuthenticated("no OIDC verifier is configured")
            return await run_in_threadpool(self.verifier.principal, token)
        if self.accounts is None:
            raise NotAuthenticated("tokens are not accepted here")
        user = await run_in_threadpool(self.accounts.token_user, token)
        if user is None:
            raise NotAuthenticated("the token is unknown, expired or revoked")
        return _principal(user, "token")

    async def _session(self, session_id: str) -> Principal | None:
        if self.accounts is None or self.options.mode != "local":
            return None
        user = await run_in_threadpool(self.accounts.session_user, session_id)
        return None if user is None else _principal(user, "session")

    def challenge(
        self, message: str, *, invalid_token: bool = False, basic: bool = True
    ) -> Response:
        """401 with the challenges of the schemes accepted (RFC 7235 4.1); a bad bearer token
        is named as such (RFC 6750 3). The Basic challenge is left out of the answers the web
        page gets, whose browser would otherwise prompt for a password itself."""
        bearer = f"Bearer {REALM}" + (', error="invalid_token"' if invalid_token else "")
        challenges = [bearer]
        if basic and self.options.mode == "local":
            # RFC 7617 2.1: the charset parameter says user names and passwords are UTF-8.
            challenges.insert(0, f'Basic {REALM}, charset="UTF-8"')
        response = problem_response(401, "unauthenticated", message)
        response.headers["WWW-Authenticate"] = ", ".join(challenges)
        return response

    def _to_login(self, scope: Scope) -> Response:
        # RFC 9110 15.4.4: 303 See Other, the page to GET instead.
        return RedirectResponse(public_root(Request(scope)) + "/login", status_code=303)


def _private(send: Send) -> Send:
    """Answers for a user are not for a shared cache, and a browser asks again before it
    reuses one (RFC 9111 5.2.2.4, 5.2.2.7): a page shown after log-out comes from the server,
    which sends the browser to log in."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            if "cache-control" not in headers:
                headers["Cache-Control"] = "private, no-cache"
        await send(message)

    return sending


def _principal(user: User, method: str) -> Principal:
    return Principal(user.name, user.role, method)


def _forbidden(message: str) -> JSONResponse:
    return problem_response(403, "forbidden", message)


def too_many_failures(wait: int) -> JSONResponse:
    # RFC 6585 4: 429 Too Many Requests, with Retry-After (RFC 9110 10.2.3) in seconds.
    response = problem_response(
        429,
        "too-many-failed-log-ins",
        f"too many failed log-ins from this address or for this user; try again in {wait} s",
    )
    response.headers["Retry-After"] = str(wait)
    return response


def _basic_credentials(credentials: str) -> tuple[str, str]:
    """RFC 7617 2: base64 of user-id ":" password, in UTF-8 (the charset we announce).

    Raises:
        NotAuthenticated: not base64, not UTF-8, or without the colon.
    """
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated("malformed Basic credentials: not base64 of UTF-8") from None
    name, colon, password = decoded.partition(":")
    if not colon:
        raise NotAuthenticated("malformed Basic credentials: no ':' between name and password")
    return name, password


def _basic_name(credentials: str) -> str | None:
    try:
        return _basic_credentials(credentials.strip())[0]
    except NotAuthenticated:
        return None


def cookies_of(headers: Headers) -> Mapping[str, str]:
    """The request's cookies (RFC 6265 5.4: ``name=value`` pairs separated by ``;``)."""
    found: dict[str, str] = {}
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            name, eq, value = pair.strip().partition("=")
            if eq and name not in found:
                found[name] = value.strip().strip('"')
    return found


def _page_request(method: str, path: str, headers: Headers) -> bool:
    """A browser asking for the web page (not an API client): sent to the log-in page."""
    if method not in ("GET", "HEAD") or path.startswith(_API_PREFIXES) or path == "/api":
        return False
    return "text/html" in headers.get("accept", "")


def _same_origin_request(headers: Headers) -> bool:
    # Browsers send Origin with every POST, PUT, PATCH and DELETE they make (Fetch standard,
    # "append a request Origin header"); SameOriginOnly has checked it names ours.
    return "origin" in headers or headers.get("sec-fetch-site") == "same-origin"
