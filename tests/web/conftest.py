"""Fixtures of the web tests: the WADO data set's server, shared by the modules reading it,
and the headless Chromium the page's tests drive (one per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from wadodata import Archive, serve

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by .ci/run
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for one test module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def wado(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A server holding the WADO data set (wadodata), read by WADO-RS, WADO-URI and rendering."""
    archive = serve(tmp_path_factory.mktemp("wado"))
    yield archive
    archive.server.kill()
