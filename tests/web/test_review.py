"""The archive page's admin endpoints over real HTTP: instances received per minute over the
last hour and per hour over the last day (/api/ingest), and the demographics conflicts
recorded on ingest (/api/conflicts); a clear 400 for wrong values."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from dicomgen import Spec, make_dataset
from findfixtures import serve_datasets
from serving import RunningServer

# The second study of REV-1 brings another name and birth date: two conflicts recorded.
DATASETS = [
    make_dataset(Spec("REV-1", "Review^Ann", 1, 1, 1)),
    make_dataset(Spec("REV-1", "Review^Ann", 1, 1, 2)),
    make_dataset(Spec("REV-2", "Other^Bob", 1, 1, 1, modality="MR")),
    make_dataset(Spec("REV-1", "Review^Anne", 2, 1, 1, birth_date="19710202")),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "review", datasets=DATASETS)
    yield srv
    srv.kill()


def get(srv: RunningServer, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.http_port}/api{path}", params=params, timeout=30)


def test_ingest_per_minute_over_the_last_hour(server: RunningServer) -> None:
    before = datetime.now(UTC)
    body: dict[str, Any] = get(server, "/ingest").json()
    assert body["span"] == "hour"
    assert body["bucket"] == "minute"
    assert body["instances"] == len(DATASETS)
    buckets = body["buckets"]
    assert len(buckets) == 60
    starts = [datetime.fromisoformat(b["start"]) for b in buckets]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(minutes=2)
    assert starts[-1] >= before.replace(second=0, microsecond=0) - timedelta(minutes=1)
    assert sum(b["instances"] for b in buckets) == len(DATASETS)


def test_ingest_per_hour_over_the_last_day(server: RunningServer) -> None:
    body: dict[str, Any] = get(server, "/ingest", span="day").json()
    assert (body["bucket"], body["instances"], len(body["buckets"])) == ("hour", 4, 24)
    counts = [b["instances"] for b in body["buckets"]]
    # Stored a moment ago: in the current hour's bucket, or the one before past the hour.
    assert counts[-1] + counts[-2] == len(DATASETS)
    assert sum(counts[:-2]) == 0


def test_conflicts_name_what_differed(server: RunningServer) -> None:
    body: dict[str, Any] = get(server, "/conflicts").json()
    assert body["total"] == 2
    found = {c["attribute"]: c for c in body["conflicts"]}
    assert set(found) == {"patient_name", "patient_birth_date"}
    name = found["patient_name"]
    assert (name["patient_id"], name["stored"], name["received"]) == (
        "REV-1",
        "Review^Ann",
        "Review^Anne",
    )
    assert name["sop_instance_uid"] == str(DATASETS[3].SOPInstanceUID)
    assert found["patient_birth_date"]["received"] == "19710202"
    page: dict[str, Any] = get(server, "/conflicts", limit="1", offset="1").json()
    assert page["total"] == 2
    assert len(page["conflicts"]) == 1


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/ingest", {"span": "week"}, "span"),
        ("/conflicts", {"limit": "-1"}, "limit"),
        ("/conflicts", {"limit": "5000"}, "limit"),
        ("/conflicts", {"offset": "x"}, "offset"),
    ],
)
def test_wrong_values_are_refused(
    server: RunningServer, path: str, params: dict[str, str], parameter: str
) -> None:
    response = get(server, path, **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert parameter in error["message"]
