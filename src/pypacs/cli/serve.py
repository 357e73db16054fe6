"""``pypacs serve``: the archive, its DICOM port and its HTTP port in one process."""

from __future__ import annotations

import argparse

from pypacs.cli.flags import Subparsers, add_setting_flags
from pypacs.config import Settings

_SECTIONS = (
    "server",
    "storage",
    "storage.s3",
    "database",
    "query",
    "retrieve",
    "access",
    "tls",
    "web",
    "auth",
    "auth.oidc",
    "audit",
    "logging",
)


def register(subparsers: Subparsers) -> None:
    """Add ``serve``."""
    serve = subparsers.add_parser("serve", help="run the archive: DICOM and HTTP")
    add_setting_flags(serve, _SECTIONS)
    serve.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until interrupted; exit status 0 (a port in use raises, with its own)."""
    # Imported here: the servers' modules are only worth loading for this command.
    from pypacs.server import run as serve

    serve(settings)
    return 0
