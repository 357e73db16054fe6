"""Cross-site requests start no work (CSRF), against a running pypacs: a POST a page of
another site could send without a preflight (text/plain, a form) is 415 on the admin API,
a state-changing request whose Origin is another site's is 403, and the same requests from
the server's own origin, or from a client that sends no Origin, are carried out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomgen import Spec, make_dataset, write_dataset
from dicomweb import CONTENT_TYPE, multipart
from helpers import index_counts, store_files, wait_for
from receiver import Receiver, config_file, receiver
from serving import RunningServer, start_pypacs

DATASETS = tuple(make_dataset(Spec(f"XS-{n}", f"Cross^{n}", 1, 1, 1)) for n in (1, 2, 3, 4))
STUDIES = [str(ds.StudyInstanceUID) for ds in DATASETS]
JSON = {"Content-Type": "application/json"}
FOREIGN = ["http://evil.example", "null", "https://127.0.0.1", "http://localhost"]


@dataclass
class Site:
    server: RunningServer
    dest: Receiver
    http: httpx.Client

    @property
    def own(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def move(self, study: str, headers: dict[str, str]) -> httpx.Response:
        body = f'{{"StudyInstanceUID": "{study}"}}'
        return self.http.post("/api/remotes/dest/move", content=body, headers=headers)

    def moved(self, response: httpx.Response) -> set[str]:
        """Wait for the move job ``response`` started; the SOP Instance UIDs received."""
        assert response.status_code == 202, response.text
        job = response.json()["job"]

        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.http.get(f"/api/jobs/{job}").json()
            return None if body["state"] == "running" else body

        assert wait_for(done, timeout=60, what=f"job {job}")["state"] == "done"
        return set(self.dest.by_uid())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("cross-site")
    files = [write_dataset(ds, root) for ds in DATASETS]
    with receiver(ae_title="DEST") as dest:
        srv = start_pypacs(root / "data", "--config", str(config_file(root, [dest])))
        try:
            assert {int(s.Status) for s in store_files(srv.dicom_port, files).values()} == {0}
            with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as http:
                yield Site(srv, dest, http)
        finally:
            srv.kill()


def assert_error(response: httpx.Response, status: int, code: str, parameter: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["status"], error["code"], error["parameter"]) == (status, code, parameter)
    message: str = error["message"]
    return message


SIMPLE_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_a_simple_post_to_move_is_415_and_moves_nothing(site: Site, content_type: str) -> None:
    site.dest.received.clear()
    response = site.move(STUDIES[0], {"Content-Type": content_type})
    message = assert_error(response, 415, "unsupported-media-type", "Content-Type")
    assert message == (
        f"this request takes Content-Type: application/json (given: {content_type!r})"
    )
    # A move that is carried out afterwards delivers its own study only.
    assert site.moved(site.move(STUDIES[1], JSON)) == {str(DATASETS[1].SOPInstanceUID)}


def test_echo_without_json_is_415(site: Site) -> None:
    response = site.http.post("/api/remotes/dest/echo")
    message = assert_error(response, 415, "unsupported-media-type", "Content-Type")
    assert message == "this request takes Content-Type: application/json (given: none)"


@pytest.mark.parametrize("origin", FOREIGN)
def test_a_foreign_origin_cannot_move(site: Site, origin: str) -> None:
    site.dest.received.clear()
    response = site.move(STUDIES[0], {**JSON, "Origin": origin})
    message = assert_error(response, 403, "cross-origin", "Origin")
    assert message == (
        f"a POST from the origin {origin!r} is refused: only pages of {site.own} may send one "
        "(cross-site request)"
    )
    assert site.moved(site.move(STUDIES[2], JSON)) == {str(DATASETS[2].SOPInstanceUID)}


@pytest.mark.parametrize("origin", ["own", "none"])
def test_the_own_origin_or_none_moves(site: Site, origin: str) -> None:
    site.dest.received.clear()
    headers = dict(JSON)
    if origin == "own":
        headers["Origin"] = site.own
    assert site.moved(site.move(STUDIES[0], headers)) == {str(DATASETS[0].SOPInstanceUID)}


def test_a_foreign_origin_cannot_store_or_delete(site: Site, tmp_path: Path) -> None:
    url = site.server.database_url
    before = index_counts(url)
    extra = make_dataset(Spec("XS-9", "Cross^Nine", 1, 1, 1))
    body = multipart([write_dataset(extra, tmp_path).read_bytes()])
    evil = {"Origin": "http://evil.example"}
    stow = site.http.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": CONTENT_TYPE, **evil}
    )
    assert_error(stow, 403, "cross-origin", "Origin")
    doomed = f"/dicom-web/studies/{STUDIES[3]}"
    assert_error(site.http.delete(doomed, headers=evil), 403, "cross-origin", "Origin")
    assert index_counts(url) == before
    # The same requests from the server's own pages are carried out.
    own = {"Origin": site.own}
    stored = site.http.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": CONTENT_TYPE, **own}
    )
    assert stored.status_code == 200, stored.text
    assert site.http.delete(doomed, headers=own).status_code in (200, 204)
    after = index_counts(url)
    assert (after["study"], after["instance"]) == (before["study"], before["instance"])
    assert site.http.get(doomed, headers={"Accept": "multipart/related"}).status_code == 404


def test_safe_methods_ignore_the_origin(site: Site) -> None:
    response = site.http.get("/api/statistics", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200


def test_pypacs_sets_no_cookie(site: Site) -> None:
    # No cookie, so none that a cross-site request could carry (one added later must be
    # SameSite=Strict).
    for path in ("/", "/api/health", "/api/statistics", "/dicom-web/studies"):
        assert "set-cookie" not in site.http.get(path).headers
