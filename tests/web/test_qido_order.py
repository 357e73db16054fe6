"""pypacs' QIDO-RS extensions over real HTTP: orderby (the order of the matches, with limit
and offset paging through that order), total=true (X-Total-Count: every match whatever the
page), and /patients (C-FIND's PATIENT level as DICOM JSON); a clear 400 for wrong values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from dicomgen import Spec, make_dataset
from findfixtures import serve_datasets
from serving import RunningServer

COUNT = 37
NAME, PID, DATE, STUDY = "00100010", "00100020", "00080020", "0020000D"


def _spec(n: int) -> Spec:
    # Names and dates in another order than arrival; some patients have two studies.
    patient = n // 3 if n % 3 == 2 else n
    return Spec(
        f"ORD-{patient:03d}",
        f"Order^{(patient * 17) % COUNT:03d}",
        1 if n % 3 != 2 else 2,
        1,
        1,
        modality="MR" if n % 4 == 0 else "CT",
        study_date=f"2022{1 + (n * 5) % 12:02d}{1 + (n * 13) % 28:02d}",
    )


DATASETS = [make_dataset(_spec(n)) for n in range(COUNT)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "qido-order", datasets=DATASETS)
    yield srv
    srv.kill()


def get(srv: RunningServer, path: str, params: dict[str, str]) -> httpx.Response:
    url = f"http://127.0.0.1:{srv.http_port}/dicom-web{path}"
    return httpx.get(url, params=params, timeout=30)


def value(obj: dict[str, Any], tag: str) -> Any:
    found = obj[tag].get("Value")
    return None if not found else found[0]


def studies(srv: RunningServer, **params: str) -> tuple[list[dict[str, Any]], httpx.Response]:
    response = get(srv, "/studies", params)
    assert response.status_code in (200, 204), response.text
    return (response.json() if response.status_code == 200 else []), response


def by_date(ds: Dataset) -> tuple[str, str]:
    return (str(ds.StudyDate), str(ds.StudyInstanceUID))


def test_orderby_a_date_pages_through_the_whole_order(server: RunningServer) -> None:
    expected = [str(ds.StudyInstanceUID) for ds in sorted(DATASETS, key=lambda d: d.StudyDate)]
    dates = sorted(str(ds.StudyDate) for ds in DATASETS)
    assert len(set(dates)) == COUNT  # no ties: the order is fully known
    seen: list[str] = []
    for offset in range(0, COUNT, 10):
        page, _ = studies(server, orderby="StudyDate", limit="10", offset=str(offset))
        seen += [value(obj, STUDY) for obj in page]
    assert seen == expected
    page, _ = studies(server, orderby="-StudyDate", limit="5")
    assert [value(obj, STUDY) for obj in page] == expected[::-1][:5]


def test_orderby_a_patient_name_ignores_case_and_keeps_filters(server: RunningServer) -> None:
    page, _ = studies(server, orderby="PatientName,-StudyDate", ModalitiesInStudy="MR")
    mr = [ds for ds in DATASETS if ds.Modality == "MR"]
    expected = sorted(mr, key=lambda d: (str(d.PatientName), -int(d.StudyDate)))
    assert [value(obj, STUDY) for obj in page] == [str(d.StudyInstanceUID) for d in expected]
    names = [value(obj, NAME)["Alphabetic"] for obj in page]
    assert names == sorted(names)


def test_total_counts_every_match_whatever_the_page(server: RunningServer) -> None:
    page, response = studies(server, limit="5", offset="30", total="true")
    assert len(page) == 5
    assert response.headers["X-Total-Count"] == str(COUNT)
    mr = sum(1 for ds in DATASETS if ds.Modality == "MR")
    _, response = studies(server, ModalitiesInStudy="MR", limit="1", total="true")
    assert response.headers["X-Total-Count"] == str(mr)
    _, response = studies(server, PatientID="NOBODY", total="true")
    assert response.status_code == 204
    assert response.headers["X-Total-Count"] == "0"
    # Not asked for: not counted.
    _, response = studies(server, limit="5")
    assert "X-Total-Count" not in response.headers


def test_patients_are_one_match_each(server: RunningServer) -> None:
    response = get(server, "/patients", {"orderby": "PatientID", "total": "true", "limit": "4"})
    assert response.status_code == 200, response.text
    ids = sorted({str(ds.PatientID) for ds in DATASETS})
    assert response.headers["X-Total-Count"] == str(len(ids))
    body = response.json()
    assert [value(obj, PID) for obj in body] == ids[:4]
    studies_of = {pid: sum(1 for ds in DATASETS if str(ds.PatientID) == pid) for pid in ids[:4]}
    # NumberOfPatientRelatedStudies (0020,1200).
    assert {value(obj, PID): value(obj, "00201200") for obj in body} == studies_of
    assert any(n == 2 for n in studies_of.values())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"orderby": "Nonsense"}, "'Nonsense' is not a DICOM keyword"),
        ({"orderby": "SeriesDescription"}, "cannot order study matches by SeriesDescription"),
        ({"orderby": "StudyDate,"}, "orderby has an empty key"),
        ({"orderby": "PatientComments"}, "cannot order study matches by PatientComments"),
        ({"total": "yes"}, "total must be true or false"),
    ],
)
def test_wrong_values_are_refused(
    server: RunningServer, params: dict[str, str], message: str
) -> None:
    response = get(server, "/studies", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["parameter"] == next(iter(params))


def test_a_study_key_on_the_patient_search_is_refused(server: RunningServer) -> None:
    response = get(server, "/patients", {"StudyDate": "20220101"})
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "StudyDate"
