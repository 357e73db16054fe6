"""One Accept negotiation for every JSON answer (STOW-RS, QIDO-RS, metadata): the ``accept``
query parameter before the Accept header (PS3.18 8.7.8.1), quality values read as numbers
(RFC 9110 12.4.2: q=0 is "not acceptable") and the most specific range deciding a media
type's quality (RFC 9110 12.5.1), the answer labelled with the type chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dicomgen import Spec, sop_uid, write

DICOM_JSON = "application/dicom+json"
JSON = "application/json"
BOUNDARY = "negotiation"


def root(srv: Any) -> str:
    return f"http://127.0.0.1:{srv.http_port}/dicom-web"


def stow(srv: Any, data: bytes, accept: str | None = None, query: str = "") -> httpx.Response:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    if accept is not None:
        headers["Accept"] = accept
    return httpx.post(f"{root(srv)}/studies{query}", content=body, headers=headers, timeout=30)


# (Accept header, ?accept= value, the answer's media type; None: 406)
CASES: list[tuple[str | None, str | None, str | None]] = [
    (f"{DICOM_JSON};q=0, {JSON}", None, JSON),
    (f"{DICOM_JSON};q=0.000", None, None),  # zero however written
    (f"*/*, {DICOM_JSON};q=0", None, JSON),  # the specific range's q=0 beats the wildcard
    (f"application/*;q=0, {JSON}", None, JSON),
    (JSON, None, JSON),
    ("application/dicom+xml", "application/dicom+xml", None),
    # httpx sends Accept: */* unless told: the header's wildcard gives the default (step 4).
    (None, "application/dicom+xml", DICOM_JSON),
    (None, JSON, JSON),
    (JSON, DICOM_JSON, DICOM_JSON),  # the query parameter first
    (DICOM_JSON, "application/dicom+xml", DICOM_JSON),  # then the header (8.7.8.1 step 3)
]


def test_stow(server: Any, tmp_path: Path) -> None:
    for n, (header, query, answer) in enumerate(CASES, start=1):
        data = write(Spec("NEGO", "Nego^Tiation", 1, 1, n), tmp_path).read_bytes()
        suffix = "" if query is None else f"?{httpx.QueryParams({'accept': query})}"
        response = stow(server, data, header, suffix)
        check(response, answer, (header, query))
        if answer is not None:
            stored = response.json()["00081199"]["Value"][0]
            assert stored["00081155"]["Value"] == [sop_uid("NEGO", 1, 1, n)]


def test_qido_and_metadata(server: Any, tmp_path: Path) -> None:
    data = write(Spec("NEGO", "Nego^Tiation", 1, 1, 1), tmp_path).read_bytes()
    assert stow(server, data).status_code == 200
    found = httpx.get(f"{root(server)}/studies", params={"PatientID": "NEGO"}, timeout=30)
    study = found.json()[0]["0020000D"]["Value"][0]
    for url, params in (
        (f"{root(server)}/studies", {"PatientID": "NEGO"}),
        (f"{root(server)}/studies/{study}/metadata", {}),
    ):
        for header, query, answer in CASES:
            asked = {**params, "accept": query} if query is not None else params
            headers = {"Accept": header} if header is not None else {}
            response = httpx.get(url, params=asked, headers=headers, timeout=30)
            check(response, answer, (url, header, query))
            if answer is not None:
                (obj,) = response.json()
                assert obj["0020000D"]["Value"] == [study]
                assert obj["00100020"]["Value"] == ["NEGO"]


def check(response: httpx.Response, answer: str | None, case: object) -> None:
    if answer is None:
        assert response.status_code == 406, (case, response.text)
        error = response.json()["error"]
        assert (error["code"], error["parameter"]) == ("not-acceptable", "Accept"), case
        return
    assert response.status_code == 200, (case, response.text)
    assert response.headers["content-type"] == answer, case


def test_a_malformed_quality_value_is_400_naming_where(server: Any) -> None:
    for params, headers, parameter in (
        ({}, {"Accept": f"{DICOM_JSON};q=high"}, "Accept"),
        ({"accept": f"{DICOM_JSON};q=2"}, {}, "accept"),
    ):
        response = httpx.get(f"{root(server)}/studies", params=params, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["parameter"] == parameter
