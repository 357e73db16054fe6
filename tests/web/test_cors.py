"""CORS against a running pypacs: off by default; pages of the origins in ``[web]
cors_origins`` get the headers (with credentials) on DICOMweb and the admin API, and their
preflights answered; any other origin gets none, and still meets the cross-site refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pypacs.config import load
from pypacs.errors import ConfigError

from serving import RunningServer, start_pypacs

VIEWER = "https://viewer.example"
LOCAL_VIEWER = "http://localhost:3000"
OTHER = "https://evil.example"
STUDIES = "/dicom-web/studies"
UNKNOWN_STUDY = "/dicom-web/studies/1.2.826.0.1.3680043.8.498.1"


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("cors")
    # Written as a user might: the default port and an upper-case host name the same origin.
    srv = start_pypacs(
        root / "data", "--cors-origins", f"https://Viewer.example:443,{LOCAL_VIEWER}"
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as client:
        yield client
    srv.kill()


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()}


# An empty archive: QIDO-RS answers 204 (PS3.18 8.3.4: no match), the API 200.
@pytest.mark.parametrize(
    ("path", "status"), [(STUDIES, 204), ("/api/health", 200), ("/api/statistics", 200)]
)
@pytest.mark.parametrize("origin", [VIEWER, LOCAL_VIEWER])
def test_a_configured_origin_gets_the_headers(
    cors: httpx.Client, path: str, status: int, origin: str
) -> None:
    response = cors.get(path, headers={"Origin": origin})
    assert response.status_code == status, response.text
    assert cors_headers(response) == {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "Warning, Content-Location, Location",
    }
    assert "origin" in vary(response)


def test_a_configured_origins_preflight_is_answered(cors: httpx.Client) -> None:
    request = {
        "Origin": VIEWER,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    response = cors.options(STUDIES, headers=request)
    assert response.status_code == 204
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": VIEWER,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
        "access-control-allow-headers": "Authorization, Content-Type, Accept",
        "access-control-max-age": "600",
    }
    assert {"origin", "access-control-request-method"} <= vary(response)


def test_another_origin_gets_no_cors_header(cors: httpx.Client) -> None:
    for origin in (OTHER, "null", "https://viewer.example.evil", "http://viewer.example"):
        response = cors.get(STUDIES, headers={"Origin": origin})
        assert response.status_code == 204
        assert cors_headers(response) == {}
        assert "origin" in vary(response)  # the answer depends on it, for caches
        preflight = cors.options(
            STUDIES, headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 405
        assert cors_headers(preflight) == {}


def test_only_dicomweb_and_the_admin_api_are_open(cors: httpx.Client) -> None:
    for path in ("/", "/index.html", "/dicom-webx", "/apiary"):
        response = cors.get(path, headers={"Origin": VIEWER})
        assert cors_headers(response) == {}, path
        assert "origin" not in vary(response), path


def test_a_configured_origin_passes_the_cross_site_refusal(cors: httpx.Client) -> None:
    # The study does not exist: 404 means the request reached its route.
    allowed = cors.delete(UNKNOWN_STUDY, headers={"Origin": VIEWER})
    assert allowed.status_code == 404, allowed.text
    assert cors_headers(allowed)["access-control-allow-origin"] == VIEWER
    refused = cors.delete(UNKNOWN_STUDY, headers={"Origin": OTHER})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cross-origin"
    assert cors_headers(refused) == {}


def test_cors_is_off_by_default(server_factory: Callable[..., RunningServer]) -> None:
    srv = server_factory()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as client:
        response = client.get(STUDIES, headers={"Origin": VIEWER})
        assert response.status_code == 204
        assert cors_headers(response) == {}
        assert "origin" not in vary(response)
        preflight = client.options(
            STUDIES, headers={"Origin": VIEWER, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 405
        assert cors_headers(preflight) == {}
        refused = client.delete(UNKNOWN_STUDY, headers={"Origin": VIEWER})
        assert refused.status_code == 403


ORIGINS_EXPECTED = 'a list of origins such as "https://viewer.example"'


@pytest.mark.parametrize(
    ("value", "shown", "expected"),
    [
        ('"https://viewer.example"', '"https://viewer.example"', "a list"),
        ('["viewer.example"]', "['viewer.example']", ORIGINS_EXPECTED),
        ('["https://v.example/"]', "['https://v.example/']", ORIGINS_EXPECTED),
        ('["*"]', "['*']", ORIGINS_EXPECTED),
    ],
)
def test_a_wrong_origin_list_is_a_configuration_error(
    tmp_path: Path, value: str, shown: str, expected: str
) -> None:
    path = tmp_path / "pypacs.toml"
    path.write_text(f"[web]\ncors_origins = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: [web] cors_origins = {shown}: expected {expected}"
