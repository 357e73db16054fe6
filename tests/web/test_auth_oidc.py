"""``[auth] mode = "oidc"`` on a real ``pypacs serve``: bearer tokens of a stand-in issuer
whose keys the test writes to a JWKS file. No token: 401 with a Bearer challenge; a reader
reads but may not store; an admin stores and deletes; a token naming no pypacs role: 403;
an expired one: 401; HTTP Basic is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from io import BytesIO

import httpx
import pytest
from pydicom.dataset import Dataset

from oidcissuer import AUDIENCE, ISSUER, Issuer

from dicomgen import Spec, make_dataset
from dicomweb import CONTENT_TYPE, assert_error, multipart
from serving import RunningServer, start_pypacs

KID = "pacs-key-1"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    issuer = Issuer()
    issuer.add(KID, "RSA")
    return issuer


@pytest.fixture(scope="module")
def server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("oidc-serve")
    (folder / "jwks.json").write_text(json.dumps(issuer.jwks()))
    config = folder / "pypacs.toml"
    config.write_text(
        '[auth]\nmode = "oidc"\n'
        f'[auth.oidc]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'jwks_file = "{folder / "jwks.json"}"\n'
    )
    srv = start_pypacs(folder / "data", "--config", str(config))
    try:
        yield srv
    finally:
        srv.stop()


def client(srv: RunningServer, token: str | None = None, **headers: str) -> httpx.Client:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", headers=headers, timeout=60)


def part10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(http: httpx.Client, ds: Dataset) -> httpx.Response:
    return http.post(
        "/dicom-web/studies",
        content=multipart([part10(ds)]),
        headers={"Content-Type": CONTENT_TYPE, "Accept": "application/dicom+json"},
    )


def test_no_token_is_challenged_for_a_bearer_token(server: RunningServer) -> None:
    with client(server) as http:
        response = http.get("/dicom-web/studies")
    assert_error(response, 401, "unauthenticated", None)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="pypacs"')
    assert "Basic" not in challenge  # no password is taken in oidc mode


def test_a_reader_reads_but_may_not_store(server: RunningServer, issuer: Issuer) -> None:
    token = issuer.token(KID, preferred_username="rita", roles=["reader"])
    with client(server, token) as http:
        found = http.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"})
        assert found.status_code in (200, 204), found.text
        assert http.get("/api/session").json() == {
            "name": "rita",
            "role": "reader",
            "method": "oidc",
        }
        refused = stow(http, make_dataset(Spec("OIDC-R", "Oidc^Reader", 1, 1, 1)))
    message = assert_error(refused, 403, "forbidden", None)
    assert "writer" in message and "'rita'" in message


def test_an_admin_stores_and_deletes(server: RunningServer, issuer: Issuer) -> None:
    ds = make_dataset(Spec("OIDC-A", "Oidc^Admin", 1, 1, 1))
    token = issuer.token(KID, preferred_username="ada", roles=["reader", "admin"])
    with client(server, token) as http:
        assert stow(http, ds).status_code == 200
        search = {"StudyInstanceUID": ds.StudyInstanceUID}
        assert len(http.get("/dicom-web/studies", params=search).json()) == 1
        assert http.delete(f"/dicom-web/studies/{ds.StudyInstanceUID}").status_code == 204
        assert http.get("/dicom-web/studies", params=search).status_code == 204


def test_a_token_without_a_pypacs_role_is_forbidden(server: RunningServer, issuer: Issuer) -> None:
    token = issuer.token(KID, preferred_username="nora", roles=["offline_access", "uma"])
    with client(server, token) as http:
        response = http.get("/dicom-web/studies")
    message = assert_error(response, 403, "forbidden", None)
    assert "'roles'" in message and "reader" in message


def test_an_expired_token_is_unauthenticated(server: RunningServer, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.token(KID, iat=now - 7200, exp=now - 3600, roles=["admin"])
    with client(server, token) as http:
        response = http.get("/dicom-web/studies")
    message = assert_error(response, 401, "unauthenticated", None)
    assert "expired" in message.lower()
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_basic_is_refused(server: RunningServer) -> None:
    basic = base64.b64encode(b"admin:admin-password").decode()
    with client(server, Authorization=f"Basic {basic}") as http:
        response = http.get("/dicom-web/studies")
    message = assert_error(response, 401, "unauthenticated", None)
    assert "Basic is not accepted" in message
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_a_token_of_another_issuer_is_unauthenticated(
    server: RunningServer, issuer: Issuer
) -> None:
    token = issuer.token(KID, iss="https://elsewhere.example", roles=["admin"])
    with client(server, token) as http:
        response = http.get("/dicom-web/studies")
    assert_error(response, 401, "unauthenticated", None)
