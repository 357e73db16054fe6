"""`pypacs serve` with a port another program holds: one line naming it, exit 2, and
nothing opened, made or repaired before both ports are bound."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomgen import Spec, write
from helpers import index_counts, run_pypacs


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port on 127.0.0.1 another program listens on."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield holder.getsockname()[1]
    holder.close()


def serve(data: Path, dicom_port: int, http_port: int) -> subprocess.CompletedProcess[str]:
    ports = ("--dicom-port", str(dicom_port), "--http-port", str(http_port))
    return run_pypacs("serve", "--data", str(data), *ports, cwd=data.parent, timeout=60)


@pytest.mark.parametrize("busy", ["DICOM", "HTTP"])
def test_a_port_in_use_stops_serve_before_the_archive_is_made(
    tmp_path: Path, occupied: int, busy: str
) -> None:
    data = tmp_path / "never-made"
    ports = (occupied, 0) if busy == "DICOM" else (0, occupied)
    flag = "--dicom-port" if busy == "DICOM" else "--http-port"
    key = "dicom_port" if busy == "DICOM" else "http_port"

    result = serve(data, *ports)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"pypacs: cannot listen for {busy} on 127.0.0.1:{occupied}: Address already in use "
        f"([server] {key}, {flag})\n"
    )
    assert not data.exists()


@pytest.mark.parametrize("busy", ["DICOM", "HTTP"])
def test_a_port_in_use_stops_serve_before_the_start_up_check(
    tmp_path: Path, occupied: int, busy: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    data = tmp_path / "data"
    write(Spec("PORT1", "Busy^Bea", 1, 1, 1), source)
    imported = run_pypacs("import", "--data", str(data), str(source), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    # A file left without its index row: the start-up check would re-index it.
    name = "0123456789abcdef0123456789abcdef"
    fan_out = data / "blobs" / name[:2]
    fan_out.mkdir(exist_ok=True)
    shutil.copy(write(Spec("PORT1", "Busy^Bea", 1, 1, 2), tmp_path), fan_out / name)
    url = f"sqlite:///{data / 'index.sqlite'}"

    result = serve(data, *((occupied, 0) if busy == "DICOM" else (0, occupied)))

    assert result.returncode == 2
    assert result.stderr.startswith(f"pypacs: cannot listen for {busy} on 127.0.0.1:{occupied}: ")
    assert len(result.stderr.splitlines()) == 1
    assert index_counts(url)["instance"] == 1  # the orphan was not re-indexed
    # ... which a check does, once run: the orphan was one.
    check = run_pypacs("check", "--data", str(data), cwd=tmp_path)
    assert (
        check.stdout.splitlines()[-1] == "2 blobs checked: 1 re-indexed, 0 missing, 0 not indexable"
    )
    assert index_counts(url)["instance"] == 2
