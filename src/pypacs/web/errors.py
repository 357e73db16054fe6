"""The one JSON error shape of the HTTP front door, and the exception → status table.

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

from pypacs.errors import (
    IndexUnavailable,
    InvalidInstance,
    NotFound,
    OutOfResources,
    PypacsError,
    StoreError,
    TranscodeError,
)
from pypacs.query.types import InvalidQuery, TooManyMatches

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


# (exception type, HTTP status, code), first match wins; PS3.18 8.7.3 / 8.8.
_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (NotFound, 404, "not-found"),
    (TooManyMatches, 413, "too-many-matches"),
    (InvalidInstance, 400, "invalid-instance"),
    (TranscodeError, 406, "cannot-transcode"),
    (OutOfResources, 503, "out-of-resources"),
    (IndexUnavailable, 503, "index-unavailable"),
    (StoreError, 500, "store-error"),
)


async def on_problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HttpProblem):
        return problem_response(exc.status, exc.code, exc.message, exc.parameter)
    if isinstance(exc, InvalidQuery):
        return problem_response(400, "bad-parameter", exc.reason, exc.parameter)
    for kind, status, code in _TABLE:
        if isinstance(exc, kind):
            level = logging.ERROR if status >= 500 else logging.INFO
            log.log(level, "%s %s: %s", request.method, request.url.path, exc)
            return problem_response(status, code, str(exc))
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal-error", f"internal error: {type(exc).__name__}")


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    response = problem_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


# PypacsError is answered by Starlette's exception middleware; anything else reaches the
# outermost handler, which answers 500 in the same shape (and logs the traceback).
EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: on_http_exception,
    PypacsError: on_problem,
    Exception: on_problem,
}
