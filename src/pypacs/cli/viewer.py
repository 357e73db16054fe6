"""``pypacs viewer install|status``: the OHIF Viewer that ``pypacs serve`` offers at
``/viewer/``, fetched from the npm registry into ``<storage path>/viewer/<version>/``.

Exit status: 0 done (installed, or already there; status: installed); 1 the install failed
(no network, a wrong digest, a full disk) or, for status, none is installed; 2 a wrong
argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pypacs.cli.flags import Subparsers, add_setting_flags
from pypacs.config import Settings
from pypacs.web.page import ohif

_SECTIONS = ("storage", "logging")
_EPILOG = (
    f"the pinned release is {ohif.PACKAGE}@{ohif.VERSION}, checked against its sha512; "
    "exit status: 0 done; 1 the install failed (or, for status, none is installed); "
    "2 wrong arguments"
)


def _registry(text: str) -> str:
    try:
        ohif.release(text)
    except ohif.ViewerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 1 to 3600")
    return value


def register(subparsers: Subparsers) -> None:
    """Add ``viewer`` with its actions."""
    viewer = subparsers.add_parser("viewer", help="the OHIF viewer served at /viewer/")
    actions = viewer.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help=f"fetch {ohif.PACKAGE}@{ohif.VERSION} from the npm registry into the data folder",
        epilog=_EPILOG,
    )
    add_setting_flags(install, _SECTIONS)
    install.add_argument(
        "--force", action="store_true", help="install again even if it is installed"
    )
    install.add_argument(
        "--registry",
        type=_registry,
        default=ohif.DEFAULT_REGISTRY,
        metavar="URL",
        help=f"npm registry or mirror to fetch from (default: {ohif.DEFAULT_REGISTRY})",
    )
    install.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up when the registry is silent this long (default: 60)",
    )
    install.set_defaults(run=_install)
    status = actions.add_parser("status", help="whether the viewer is installed", epilog=_EPILOG)
    add_setting_flags(status, _SECTIONS)
    status.set_defaults(run=_status)


def viewer_root(settings: Settings) -> Path:
    """Where the viewers are installed (``viewer/`` in the archive's folder), as served."""
    return Path(settings.web_options().viewer_root)


def _install(settings: Settings, args: argparse.Namespace) -> int:
    root = viewer_root(settings)
    present = ohif.installed(root)
    if present is not None and not args.force:
        print(f"the OHIF viewer {present.version} is installed in {present.folder}")
        return 0
    try:
        found = ohif.install(
            root,
            ohif.release(args.registry),
            force=args.force,
            timeout=args.timeout,
            progress=lambda message: print(message, file=sys.stderr),
        )
    except ohif.ViewerError as exc:
        print(f"pypacs: viewer install: {exc}", file=sys.stderr)
        return 1
    print(f"installed the OHIF viewer {found.version} in {found.folder}")
    print("pypacs serve offers it at /viewer/")
    return 0


def _status(settings: Settings, _args: argparse.Namespace) -> int:
    root = viewer_root(settings)
    found = ohif.installed(root)
    if found is None:
        print(f"the OHIF viewer {ohif.VERSION} is not installed in {root}")
        print("pypacs viewer install fetches it")
        return 1
    print(f"installed: {ohif.PACKAGE} {found.version}")
    print(f"folder: {found.folder}")
    print(f"from: {found.source}")
    print(f"integrity: {found.integrity}")
    print(f"installed at: {found.installed_at}")
    return 0
