"""Flags more than one command takes: the settings' own, the information model, our AE title.

Also where the flags meet the settings: ``settings_from(args)`` loads the file and applies
the flags given.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from pypacs.config import SETTINGS, Settings, load, parse_flag, setting
from pypacs.errors import ConfigError
from pypacs.remote.registry import Peer, RemoteError

# What add_subparsers returns; argparse names it privately (and it is not generic at run time).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_CONFIG = "pypacs.toml"
CREATE_HELP = (
    "make a new archive when the folder (--data, [storage] path) holds none; without it, "
    "only a folder named by --data or a configuration file is made, never the default one"
)


def add_setting_flags(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    """``--config`` and one flag per setting of ``sections``, generated from SETTINGS."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file (default: $PYPACS_CONFIG, or ./{DEFAULT_CONFIG} if present)",
    )
    for declared in SETTINGS:
        if declared.section in sections:
            parser.add_argument(
                declared.flag,
                dest=declared.dest,
                metavar="VALUE",
                help=f"{declared.help} ([{declared.section}] {declared.key}; {declared.default!r})",
            )


def settings_from(args: argparse.Namespace) -> Settings:
    """The file (``--config``, ``$PYPACS_CONFIG`` or ``./pypacs.toml``), then the flags given.

    Raises:
        ConfigError: the file or a flag holds a wrong value.
    """
    path = getattr(args, "config", None) or os.environ.get("PYPACS_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides = {}
    for declared in SETTINGS:
        text = getattr(args, declared.dest, None)
        if text is not None:
            overrides[(declared.section, declared.key)] = parse_flag(declared, text)
    return load(Path(path) if path else None, overrides)


def add_remote(parser: argparse.ArgumentParser) -> None:
    """The peer asked: a ``[remotes]`` name or ``host:port:AE``."""
    parser.add_argument("remote", metavar="REMOTE", help="a [remotes] name or host:port:AE")


def remote_from(settings: Settings, text: str) -> Peer:
    """The peer ``REMOTE`` names; an AE title given as ``host:port:AE`` is held to the rule
    the file's ``[remotes.NAME] ae_title`` is.

    Raises:
        ConfigError: neither a known name nor host:port:AE, or the AE title is not one.
    """
    try:
        peer = settings.remotes.parse(text)
    except RemoteError as exc:
        raise ConfigError(str(exc)) from exc
    check = setting("server", "ae_title").check
    expected = check(peer.ae_title) if check is not None else None
    if expected is not None:
        raise ConfigError(f"REMOTE {text!r}: expected {expected}")
    return peer


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """-P/-S/-O (the Query/Retrieve information model) and -L (the level)."""
    model = parser.add_mutually_exclusive_group()
    for flag, const, text in (
        ("-P", "PATIENT_ROOT", "Patient Root information model"),
        ("-S", "STUDY_ROOT", "Study Root information model (default)"),
        ("-O", "PATIENT_STUDY_ONLY", "Patient/Study Only information model"),
    ):
        model.add_argument(flag, dest="model", action="store_const", const=const, help=text)
    parser.add_argument(
        "-L",
        "--level",
        default=None,
        help="QueryRetrieveLevel (default STUDY, or PATIENT with -P/-O)",
    )


def add_calling_ae(parser: argparse.ArgumentParser) -> None:
    """``--ae-title``: the ``[server] ae_title`` setting, as the calling AE title."""
    parser.add_argument(
        "--ae-title",
        dest="server__ae_title",
        metavar="VALUE",
        help="our calling AE title ([server] ae_title)",
    )
