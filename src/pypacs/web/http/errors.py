"""The one JSON error shape of the HTTP front door, answering each exception with the
status the model's table gives it (``pypacs.model.outcomes.HTTP_STATUS``).

Every error answer is ``{"error": {"status": 400, "code": "...", "message": "...",
"parameter": "..."}}`` with ``Content-Type: application/json``; ``parameter`` names the
query parameter, path segment or header at fault when there is one.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from pypacs.errors import InvalidQuery, PypacsError
from pypacs.model.outcomes import http_status_for

log = logging.getLogger("pypacs.web")


class HttpProblem(PypacsError):
    """An answer other than success, raised anywhere below a route."""

    def __init__(
        self, status: int, code: str, message: str, *, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter


def bad_parameter(parameter: str, message: str) -> HttpProblem:
    return HttpProblem(400, "bad-parameter", message, parameter=parameter)


def not_found(message: str) -> HttpProblem:
    return HttpProblem(404, "not-found", message)


def not_acceptable(message: str) -> HttpProblem:
    return HttpProblem(406, "not-acceptable", message, parameter="Accept")


def problem_response(
    status: int, code: str, message: str, parameter: str | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    return JSONResponse({"error": body}, status_code=status)


async def on_problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HttpProblem):
        return problem_response(exc.status, exc.code, exc.message, exc.parameter)
    answer = http_status_for(exc)
    if answer is not None:
        status, code = answer
        if isinstance(exc, InvalidQuery):  # the client's mistake, named in the answer
            return problem_response(status, code, exc.reason, exc.parameter)
        level = logging.ERROR if status >= 500 else logging.INFO
        log.log(level, "%s %s: %s", request.method, request.url.path, exc)
        return problem_response(status, code, str(exc))
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal-error", f"internal error: {type(exc).__name__}")


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (an unknown path, a method a resource does not have) in the
    one shape, with a message that names the path and, for 405, every method it has."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    message = str(exc.detail)
    path = request.url.path
    if exc.status_code == 404 and message == "Not Found":
        message = f"nothing at {path}"
    elif exc.status_code == 405:
        # RFC 9110 15.5.6: Allow lists the methods of the target resource; several routes
        # may share one path (QIDO-RS GET and STOW-RS POST on /studies).
        allowed = _allowed_methods(request) or _split(headers.get("Allow", ""))
        headers["Allow"] = ", ".join(allowed)
        message = f"{path} does not take {request.method}; it takes {headers['Allow']}"
    response = problem_response(exc.status_code, code, message)
    response.headers.update(headers)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """The methods of every route whose path matches the request's."""
    router = request.scope.get("router")
    methods: set[str] = set()
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _split(header: str) -> list[str]:
    return sorted({m.strip() for m in header.split(",") if m.strip()})


# PypacsError is answered by Starlette's exception middleware; anything else reaches the
# outermost handler, which answers 500 in the same shape (and logs the traceback).
EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: on_http_exception,
    PypacsError: on_problem,
    Exception: on_problem,
}
