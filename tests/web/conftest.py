"""Fixtures of the web tests: the WADO data set's server, shared by the modules reading it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wadodata import Archive, serve


@pytest.fixture(scope="session")
def wado(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A server holding the WADO data set (wadodata), read by WADO-RS, WADO-URI and rendering."""
    archive = serve(tmp_path_factory.mktemp("wado"))
    yield archive
    archive.server.kill()
