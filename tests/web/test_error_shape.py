"""Every HTTP input path answers a wrong request in the one JSON error shape:
``{"error": {"status", "code", "message", "parameter"?}}`` with the HTTP status repeated, and
a failure leaves the archive as it was."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from findfixtures import INSTANCE_UID, SERIES_UID, STUDY_UID
from helpers import index_counts
from serving import RunningServer

UNKNOWN = "1.2.826.0.1.3680043.10.1255.7001.99"
S, SE, INST = STUDY_UID["john1"], SERIES_UID["john1/1"], INSTANCE_UID["john1/1/1"]
W = "/dicom-web"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=b'


# (method, path, query parameters, headers, body) -> (status, code, parameter)
CASES: list[Any] = [
    # QIDO-RS
    pytest.param("GET", f"{W}/studies", {"limit": "x"}, {}, None, 400, "bad-parameter", "limit"),
    pytest.param(
        "GET",
        f"{W}/series",
        {"Modality": "CT", "Nope": "1"},
        {},
        None,
        400,
        "bad-parameter",
        "Nope",
        id="qido-unknown-attribute",
    ),
    pytest.param(
        "GET",
        f"{W}/studies",
        {},
        {"Accept": "text/html"},
        None,
        406,
        "not-acceptable",
        "Accept",
        id="qido-accept",
    ),
    # WADO-RS
    pytest.param("GET", f"{W}/studies/{UNKNOWN}", {}, {}, None, 404, "not-found", None),
    pytest.param(
        "GET",
        f"{W}/studies/{S}/series/{SE}/metadata",
        {},
        {"Accept": "application/dicom+xml"},
        None,
        406,
        "not-acceptable",
        "Accept",
        id="metadata-xml",
    ),
    pytest.param(
        "GET",
        f"{W}/studies/{S}/series/{SE}/instances/{INST}/frames/0",
        {},
        {},
        None,
        400,
        "bad-parameter",
        "frames",
        id="frame-zero",
    ),
    pytest.param(
        "GET",
        f"{W}/studies/{S}/series/{SE}/instances/{INST}/rendered",
        {"window": "a,b"},
        {},
        None,
        400,
        "bad-parameter",
        "window",
        id="rendered-window",
    ),
    pytest.param(
        "GET",
        f"{W}/studies/x!y/series/{SE}/thumbnail",
        {},
        {},
        None,
        400,
        "bad-parameter",
        "study",
        id="thumbnail-bad-uid",
    ),
    # WADO-URI
    pytest.param(
        "GET",
        "/wado",
        {"requestType": "WADO", "studyUID": S, "seriesUID": SE},
        {},
        None,
        400,
        "bad-parameter",
        "objectUID",
        id="wado-uri-missing-object",
    ),
    # STOW-RS
    pytest.param(
        "POST",
        f"{W}/studies",
        {},
        {"Content-Type": "application/json"},
        b"{}",
        415,
        None,
        "Content-Type",
        id="stow-media-type",
    ),
    pytest.param(
        "POST",
        f"{W}/studies",
        {},
        {"Content-Type": MULTIPART},
        b"--b\r\nnot closed",
        400,
        None,
        None,
        id="stow-truncated",
    ),
    # DELETE
    pytest.param("DELETE", f"{W}/studies/{UNKNOWN}", {}, {}, None, 404, "not-found", None),
    # admin API
    pytest.param("GET", "/api/jobs/nope", {}, {}, None, 404, "not-found", None),
    pytest.param(
        "POST",
        "/api/remotes/nowhere/echo",
        {},
        {"Content-Type": "application/json"},
        None,
        404,
        "not-found",
        None,
        id="echo",
    ),
    pytest.param(
        "POST",
        "/api/remotes/nowhere/echo",
        {},
        {"Content-Type": "text/plain"},
        b"",
        415,
        "unsupported-media-type",
        "Content-Type",
        id="echo-not-json",
    ),
    pytest.param(
        "DELETE",
        f"{W}/studies/{S}",
        {},
        {"Origin": "http://elsewhere.example"},
        None,
        403,
        "cross-origin",
        "Origin",
        id="delete-cross-origin",
    ),
    pytest.param(
        "GET",
        f"/api/studies/{UNKNOWN}/archive.zip",
        {},
        {},
        None,
        404,
        "not-found",
        None,
        id="zip",
    ),
    # routing
    pytest.param("GET", "/api/no-such-thing", {}, {}, None, 404, "not-found", None),
    pytest.param("GET", "/no-such-page.html", {}, {}, None, 404, "not-found", None, id="page"),
    pytest.param("POST", "/no-such-thing", {}, {}, b"", 404, "not-found", None, id="post-404"),
    pytest.param("GET", f"{W}/studies/{S}/nope", {}, {}, None, 404, "not-found", None, id="deep"),
    # a percent-encoded UTF-8 path (RFC 3986 2.1) reaches pypacs, which answers in the shape
    pytest.param("GET", "/%C3%A9t%C3%A9", {}, {}, None, 404, "not-found", None, id="utf8-404"),
    pytest.param(
        "GET", f"{W}/studies/%C3%A9", {}, {}, None, 400, "bad-parameter", "study", id="utf8-uid"
    ),
    pytest.param("PUT", f"{W}/studies", {}, {}, None, 405, "method-not-allowed", None, id="method"),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "headers", "body", "status", "code", "parameter"), CASES
)
def test_one_error_shape(
    find_pacs: RunningServer,
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str | None,
    parameter: str | None,
) -> None:
    before = index_counts(find_pacs.database_url)
    response = httpx.request(
        method,
        f"http://127.0.0.1:{find_pacs.http_port}{path}",
        params=params,
        headers=headers,
        content=body,
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) <= {"status", "code", "message", "parameter"}
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    assert error.get("parameter") == parameter
    assert index_counts(find_pacs.database_url) == before


# RFC 9110 15.5.6: a 405 lists every method of the target resource in Allow, also when
# several routes share its path.
ALLOWED: list[Any] = [
    pytest.param("PUT", f"{W}/studies", "GET, HEAD, POST", id="qido-and-stow"),
    pytest.param("PATCH", f"{W}/studies/{S}", "DELETE, GET, HEAD, POST", id="study"),
    pytest.param("POST", f"{W}/studies/{S}/series/{SE}", "DELETE, GET, HEAD", id="series"),
    pytest.param("DELETE", "/api/health", "GET, HEAD", id="health"),
    pytest.param("POST", "/index.html", "GET, HEAD", id="page-file"),
    pytest.param("DELETE", "/", "GET, HEAD", id="page"),
]


@pytest.mark.parametrize(("method", "path", "allow"), ALLOWED)
def test_method_not_allowed_names_the_allowed_methods(
    find_pacs: RunningServer, method: str, path: str, allow: str
) -> None:
    before = index_counts(find_pacs.database_url)
    response = httpx.request(method, f"http://127.0.0.1:{find_pacs.http_port}{path}", timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["allow"] == allow
    assert response.json() == {
        "error": {
            "status": 405,
            "code": "method-not-allowed",
            "message": f"{path} does not take {method}; it takes {allow}",
        }
    }
    assert index_counts(find_pacs.database_url) == before


def raw_request(port: int, target: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Send one request line as given (no client library re-encodes it); the answer's status
    line, headers (lower-case names) and body, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


RAW_UTF8 = "/\u00e9t\u00e9".encode()  # "/été" as UTF-8 bytes, not percent-encoded


@pytest.mark.parametrize("target", [RAW_UTF8, b"/a b"], ids=["raw-utf8", "space"])
def test_invalid_request_target_is_400_from_the_http_server(
    find_pacs: RunningServer, target: bytes
) -> None:
    # RFC 9112 3.2: the request target is ASCII. Bytes outside it are refused by uvicorn's
    # HTTP parser before pypacs gets a request, with uvicorn's own fixed text/plain body and
    # the connection closed: not the JSON shape (docs/conformance.md, HTTP errors). The same
    # path percent-encoded is answered by pypacs (the utf8-* cases above).
    status, headers, body = raw_request(find_pacs.http_port, target)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"connection"] == b"close"
    assert body == b"Invalid HTTP request received."
    # The server is fine afterwards.
    assert httpx.get(f"http://127.0.0.1:{find_pacs.http_port}/api/health").status_code == 200


def test_request_target_too_long_is_414_in_the_shape(find_pacs: RunningServer) -> None:
    # [web] max_url_bytes (16 KiB by default): a longer target is answered, not reset, and
    # in the one shape, by pypacs' HTTP connection layer (web/connection.py).
    status, headers, body = raw_request(find_pacs.http_port, b"/" + b"a" * 200_000)
    assert status == b"HTTP/1.1 414 Request-URI Too Long"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert json.loads(body) == {
        "error": {
            "status": 414,
            "code": "uri-too-long",
            "message": "the request target (path and query) exceeds 16384 bytes",
        }
    }
    assert httpx.get(f"http://127.0.0.1:{find_pacs.http_port}/api/health").status_code == 200
