"""`pypacs find` against pypacs itself and against DCMTK's dcmqrscp."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomgen import Spec, write

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def pypacs_find(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pypacs", "find", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=NODELAY,
    )


def storescu(port: int, ae: str, files: list[Path]) -> None:
    subprocess.run(
        ["storescu", "-aec", ae, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        capture_output=True,
        env=NODELAY,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("find-cli")
    specs = [
        Spec("FIND1", "Smith^John", 1, 1, 1, study_date="20240110"),
        Spec("FIND1", "Smith^John", 2, 1, 1, modality="MR", study_date="20240210"),
        Spec("FIND2", "Jones^Ann", 1, 1, 1, study_date="20240115"),
    ]
    return [write(spec, folder) for spec in specs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dcmqrscp(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    storage = tmp_path / "qr"
    storage.mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 8\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nDCMQR {storage} RW (100, 1024mb) ANY\nAETable END\n"
    )
    proc = subprocess.Popen(
        ["dcmqrscp", "-c", str(config), str(port)],
        env=NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        echo = subprocess.run(
            ["echoscu", "-aec", "DCMQR", "127.0.0.1", str(port)], capture_output=True, env=NODELAY
        )
        if echo.returncode == 0:
            break
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_find_against_pypacs_table_and_json(server: object, files: list[Path]) -> None:
    port = server.dicom_port  # type: ignore[attr-defined]
    storescu(port, "PYPACS", files)
    remote = f"127.0.0.1:{port}:PYPACS"

    table = pypacs_find(
        remote, "-k", "PatientID", "-k", "StudyDate=20240101-20240131", "-k", "PatientName=smith*"
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "PatientID  StudyDate  PatientName",
        "FIND1      20240110   Smith^John",
    ]
    assert table.stderr.splitlines()[-1] == "1 match"

    patients = pypacs_find(
        remote, "-P", "-k", "PatientID", "-k", "NumberOfPatientRelatedStudies", "--json"
    )
    assert patients.returncode == 0, patients.stderr
    assert patients.stderr.splitlines()[-1] == "2 matches"
    answers = [json.loads(line) for line in patients.stdout.splitlines()]
    assert sorted((a["00100020"]["Value"][0], a["00201200"]["Value"][0]) for a in answers) == [
        ("FIND1", 2),
        ("FIND2", 1),
    ]


def test_find_reports_a_failure_status(server: object) -> None:
    port = server.dicom_port  # type: ignore[attr-defined]
    result = pypacs_find(f"127.0.0.1:{port}:PYPACS", "-L", "SERIES", "-k", "Modality")
    assert result.returncode == 1
    assert "status 0xA900: StudyInstanceUID must be a single value" in result.stderr


def test_find_usage_errors(server: object) -> None:
    assert pypacs_find("nowhere", "-k", "PatientID").returncode == 2
    bad_key = pypacs_find(f"127.0.0.1:{server.dicom_port}:PYPACS", "-k", "NoSuchKeyword=1")  # type: ignore[attr-defined]
    assert bad_key.returncode == 2
    assert "not a DICOM keyword" in bad_key.stderr
    closed = pypacs_find(f"127.0.0.1:{free_port()}:NOBODY", "-k", "PatientID")
    assert closed.returncode == 2
    assert "refused or did not answer" in closed.stderr


def test_find_against_dcmqrscp(dcmqrscp: int, files: list[Path]) -> None:
    storescu(dcmqrscp, "DCMQR", files)
    result = pypacs_find(
        f"127.0.0.1:{dcmqrscp}:DCMQR",
        "-k",
        "PatientID=FIND1",
        "-k",
        "StudyDate",
        "-k",
        "StudyInstanceUID",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PatientID", "StudyDate", "StudyInstanceUID"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["20240110", "20240210"]
    assert shutil.which("dcmqrscp")
