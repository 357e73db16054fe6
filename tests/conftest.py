"""Shared fixtures: real pypacs servers on ephemeral ports, index databases, archives.

Plain helpers (starting a server, building datasets, reading the index) live in named modules
beside this one (serving, helpers, dicomgen, findfixtures, ...); what is a fixture here is
requested as a test's argument, never imported.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pypacs.archive import Archive, ArchiveOptions
from pypacs.archive.ingest import configure_pydicom

from findfixtures import serve_datasets
from helpers import pg_database, wait_for
from qrscp import free_port
from serving import RunningServer, start_pypacs


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers on demand (``factory(*flags, data=...)``); all killed afterwards."""
    started: list[RunningServer] = []

    def factory(*args: str, data: Path | None = None) -> RunningServer:
        srv = start_pypacs(data or tmp_path / f"data{len(started)}", *args)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.kill()


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A pypacs server of its own, with an empty archive, for one test."""
    return server_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index database on each backend the index supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        yield from pg_database()


@pytest.fixture
def archive(db_url: str, tmp_path: Path) -> Iterator[Archive]:
    """An Archive opened in-process on each index backend (``db_url``), blobs not fsynced."""
    configure_pydicom()
    arc = Archive.open(
        ArchiveOptions(
            db_url,
            str(tmp_path / "blobs"),
            overwrite_duplicates=False,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )
    yield arc
    arc.close()


@pytest.fixture(scope="session")
def find_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server holding the find data set (findfixtures.PATIENTS) on default settings.

    Shared by every module that only reads it (C-FIND, QIDO-RS, the error shape): a test
    that stores or deletes starts its own.
    """
    srv = serve_datasets(tmp_path_factory, "find-set")
    yield srv
    srv.kill()


_NODELAY = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp as the remote, taking any transfer syntax (+xa); its port and
    the folder it writes what it receives to."""
    port, folder = free_port(), tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen(
        ["storescp", "+xa", "-aet", "STORESCP", "-od", str(folder), str(port)],
        env=_NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        echo = ["echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)]
        wait_for(
            lambda: subprocess.run(echo, capture_output=True, env=_NODELAY).returncode == 0,
            timeout=20,
            what="storescp to answer C-ECHO",
        )
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)
