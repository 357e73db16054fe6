"""QIDO-RS: search for studies, series and instances (PS3.18 10.6)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pypacs.archive import Archive
from pypacs.web.options import WebOptions


def routes(archive: Archive, options: WebOptions, base: str) -> list[BaseRoute]:
    return []
