"""The page opened in a headless Chromium for a test: ready when its script says so, and
any error of its script fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from playwright.sync_api import Browser, Page, expect


def opened(
    browser: Browser, url: str, *, timeout_ms: float | None = None, **context: Any
) -> Iterator[Page]:
    """The page at ``url`` in a new browser context (``context``: its options), once its
    body says ``data-ready``; for a fixture's ``yield from``."""
    browser_context = browser.new_context(**context)
    if timeout_ms is not None:
        browser_context.set_default_timeout(timeout_ms)
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    yield page
    browser_context.close()
    assert errors == [], "the page's script failed"
