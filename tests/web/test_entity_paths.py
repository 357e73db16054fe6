"""A malformed UID in a resource path gets one answer whatever the resource: WADO-RS,
metadata, DELETE, STOW-RS and the admin API's study archive all name the path segment and
say the same (one rule: model/uid.py; one place: web/dicomweb/resources.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dicomweb import CONTENT_TYPE, assert_error, base, multipart
from serving import RunningServer, start_pypacs

BAD = "1.2.abc!"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_pypacs(tmp_path_factory.mktemp("paths") / "data")
    yield srv
    srv.kill()


@pytest.mark.parametrize(
    ("method", "path", "segment"),
    [
        ("GET", f"/studies/{BAD}", "study"),
        ("GET", f"/studies/1.2/series/{BAD}/metadata", "series"),
        ("DELETE", f"/studies/{BAD}", "study"),
        ("DELETE", f"/studies/1.2/series/1.2.3/instances/{BAD}", "instance"),
        ("POST", f"/studies/{BAD}", "study"),
        ("GET", f"/../api/studies/{BAD}/archive.zip", "study"),
    ],
)
def test_one_answer_for_a_malformed_path_uid(
    pacs: RunningServer, method: str, path: str, segment: str
) -> None:
    url = base(pacs) + path
    if path.startswith("/../"):
        url = f"http://127.0.0.1:{pacs.http_port}{path[3:]}"
    body = multipart([b"x"]) if method == "POST" else None
    headers = {"content-type": CONTENT_TYPE} if method == "POST" else {}
    response = httpx.request(method, url, content=body, headers=headers, timeout=30)
    message = assert_error(response, 400, "bad-parameter", segment)
    assert message == f"{segment} is not a UID: {BAD!r}"
