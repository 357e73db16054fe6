"""Every HTTP input path answers a wrong request in the one JSON error shape:
``{"error": {"status", "code", "message", "parameter"?}}`` with the HTTP status repeated, and
a failure leaves the archive as it was."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import RunningServer
from findfixtures import INSTANCE_UID, SERIES_UID, STUDY_UID, serve_datasets

from helpers import index_counts

UNKNOWN = "1.2.826.0.1.3680043.10.1255.7001.99"
S, SE, INST = STUDY_UID["john1"], SERIES_UID["john1/1"], INSTANCE_UID["john1/1/1"]
W = "/dicom-web"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=b'


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "error-shape")
    yield srv
    srv.kill()


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
        f"{W}/studies/x.y/series/{SE}/thumbnail",
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
        "POST", "/api/remotes/nowhere/echo", {}, {}, None, 404, "not-found", None, id="echo"
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
    pytest.param("PUT", f"{W}/studies", {}, {}, None, 405, "method-not-allowed", None, id="method"),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "headers", "body", "status", "code", "parameter"), CASES
)
def test_one_error_shape(
    pacs: RunningServer,
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str | None,
    parameter: str | None,
) -> None:
    before = index_counts(pacs.database_url)
    response = httpx.request(
        method,
        f"http://127.0.0.1:{pacs.http_port}{path}",
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
    assert index_counts(pacs.database_url) == before
