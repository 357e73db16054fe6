"""What the cluster tests share: one PostgreSQL database and one object store per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import pg_database
from s3 import CREDENTIALS, Moto, start_moto


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, the index every node of the module shares."""
    yield from pg_database()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto_server, the object store the nodes of the module share."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Test credentials in the environment the nodes inherit; nobody's own files."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(CREDENTIALS)
