"""pypacs on a PostgreSQL server that goes away and comes back: while it is down a C-STORE
is refused with Out of Resources (0xA700) and keeps nothing, a C-FIND fails, and QIDO-RS
answers 503, each promptly (the pool's connect timeout bounds the wait); once it is back the
same C-STORE succeeds and QIDO-RS answers 200, without restarting pypacs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomgen import Spec, write
from helpers import association, blob_files, status_of, store_files, tmp_files
from pginstance import PgInstance
from serving import RunningServer

# Generous for a busy machine, yet far below "forever": a hang fails the test.
BOUND = 60.0


@pytest.fixture
def postgres() -> Iterator[PgInstance]:
    instance = PgInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.remove()


def c_find(port: int) -> list[str]:
    """The status of every C-FIND response to a Study level query for all studies."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    model = StudyRootQueryRetrieveInformationModelFind
    with association(port, [(model, ExplicitVRLittleEndian)], timeout=BOUND) as assoc:
        assert assoc.is_established
        return [status_of(status) for status, _ in assoc.send_c_find(query, model)]


def qido(node: RunningServer) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{node.http_port}/dicom-web/studies", timeout=BOUND)


def test_pypacs_rides_out_a_database_restart(
    server_factory: Callable[..., RunningServer], postgres: PgInstance, tmp_path: Path
) -> None:
    node = server_factory("--database-url", postgres.url)
    first = write(Spec("PGR", "Restart^Before", 1, 1, 1), tmp_path)
    second = write(Spec("PGR", "Restart^During", 2, 1, 1), tmp_path)
    assert status_of(store_files(node.dicom_port, [first])[first]) == "0x0000"
    assert len(qido(node).json()) == 1
    stored = blob_files(node.data)

    postgres.stop()
    assert status_of(store_files(node.dicom_port, [second])[second]) == "0xA700"
    assert blob_files(node.data) == stored  # its blob revoked
    assert tmp_files(node.data) == []
    assert c_find(node.dicom_port) == ["0xA700"]
    down = qido(node)
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "index-unavailable"

    postgres.start()
    assert status_of(store_files(node.dicom_port, [second])[second]) == "0x0000"
    up = qido(node)
    assert up.status_code == 200, up.text
    assert len(up.json()) == 2
    assert len(blob_files(node.data)) == 2
    assert c_find(node.dicom_port) == ["0xFF00", "0xFF00", "0x0000"]
    assert node.proc.poll() is None  # the same process throughout
