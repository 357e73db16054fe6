"""The command line: ``pypacs serve|import|check|find|echo|get|move|user|token|viewer``.

One module per command group, each with ``register(subparsers)`` and
``run(settings, args)``; ``flags`` holds the flags several commands share. May import
``server``, ``config``, ``net.scu``, ``archive`` (import, check), ``model``, ``logs``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pypacs import __version__, logs
from pypacs.cli import accounts, archive, find, retrieve, serve, viewer
from pypacs.cli.flags import settings_from
from pypacs.config import Settings
from pypacs.errors import ConfigError, PypacsError

__all__ = ["main"]

# Each registers its commands, in the order the help lists them.
_GROUPS = (serve, archive, find, retrieve, accounts, viewer)
# Commands that open the archive (get only without --output, which makes no difference here).
_ARCHIVE_COMMANDS = ("serve", "import", "check", "get", "user", "token")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pypacs", description="A DICOM archive.")
    parser.add_argument("--version", action="version", version=f"pypacs {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.register(subparsers)
    return parser


def _redactions(settings: Settings, command: str) -> dict[str, str]:
    """The database URL as written → with its password masked, for commands that use it."""
    if command not in _ARCHIVE_COMMANDS or not settings.database.url:
        return {}
    from pypacs.server import url_redactions

    return url_redactions(settings.database.url)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, load the settings, run the command; its exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = settings_from(args)
        logs.setup(settings.logging.level, _redactions(settings, args.command))
        status: int = args.run(settings, args)
        return status
    except ConfigError as exc:
        print(f"pypacs: configuration error: {logs.redact(str(exc))}", file=sys.stderr)
        return 2
    except PypacsError as exc:
        print(f"pypacs: {logs.redact(str(exc))}", file=sys.stderr)
        failed: int = getattr(exc, "exit_status", 1)  # 2: no archive, a port in use
        return failed
    except KeyboardInterrupt:
        return 130
