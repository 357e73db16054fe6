"""Settings: declared once (a typed field per key, with its default, help and check, in one
frozen dataclass per section), read from one TOML file, then frozen.

Every key is optional; command-line flags override the file; a wrong value is an error
that names the file, the key, the value and what was expected. The package builds the
options objects of the lower layers and imports nothing else of ours: checks.py (the value
checks), sections.py (one dataclass per section), settings.py (the whole, its flat table and
the options it builds), and here the reading of the file and the flags.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pypacs.config.checks import Check
from pypacs.config.settings import (
    _BY_NAME,
    _REMOTE_KEYS,
    _REMOTE_OPTIONAL,
    _SECTIONS,
    SETTINGS,
    Setting,
    Settings,
    setting,
)
from pypacs.errors import ConfigError
from pypacs.model.access import Service
from pypacs.remote.registry import Peer, Peers

__all__ = ["SETTINGS", "Setting", "Settings", "defaults", "load", "parse_flag", "setting"]


def _typed(setting_type: type, value: Any) -> bool:
    if setting_type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, setting_type)


def _validate(
    where: str, section: str, key: str, value: Any, kind: type, check: Check | None
) -> Any:
    expected = None if _typed(kind, value) else _type_name(kind)
    if expected is None and check is not None:
        expected = check(value)
    if expected is not None:
        raise ConfigError(f"{where}[{section}] {key} = {_show(value)}: expected {expected}")
    return value


def _type_name(kind: type) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    return names.get(kind, kind.__name__)


def _show(value: Any) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else repr(value).lower()
        if isinstance(value, bool)
        else repr(value)
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _remotes(where: str, table: Any) -> Peers:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}[remotes] must be a table of [remotes.NAME] tables")
    remotes = []
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}[remotes.{name}] must be a table with ae_title, host, port")
        for key in entry:
            if key not in _REMOTE_KEYS and key not in _REMOTE_OPTIONAL:
                raise ConfigError(
                    f"{where}[remotes.{name}] {key}: unknown key; expected one of "
                    + ", ".join([*_REMOTE_KEYS, *_REMOTE_OPTIONAL])
                )
        values: dict[str, Any] = {}
        for key, (kind, check) in _REMOTE_KEYS.items():
            if key not in entry:
                raise ConfigError(f"{where}[remotes.{name}] lacks {key}")
            values[key] = _validate(where, f"remotes.{name}", key, entry[key], kind, check)
        for key, (kind, optional_check) in _REMOTE_OPTIONAL.items():
            if key in entry:
                value = _validate(where, f"remotes.{name}", key, entry[key], kind, optional_check)
                values[key] = tuple(Service(v) for v in value) if key == "allow" else value
        remotes.append(Peer(name=name, **values))
    return Peers.of(remotes)


# Keys that are no more, and what replaced each.
_REPLACED = {
    ("retrieve", "allowed_aes"): "[remotes.NAME] allow and [access] unknown_callers",
}


def _flattened(data: dict[str, Any]) -> dict[str, Any]:
    """The file's tables with each nested section (``[auth.oidc]``) lifted to the top under
    its dotted name."""
    flat = dict(data)
    for name in _SECTIONS:
        parent, dot, child = name.partition(".")
        table = flat.get(parent)
        if dot and isinstance(table, dict) and child in table:
            table = dict(table)
            flat[name] = table.pop(child)
            flat[parent] = table
    return flat


def _from_file(path: Path) -> tuple[dict[tuple[str, str], Any], Peers]:
    data = _flattened(_read_toml(path))
    where = f"{path}: "
    values: dict[tuple[str, str], Any] = {}
    remotes = Peers()
    for section, table in data.items():
        if section == "remotes":
            remotes = _remotes(where, table)
            continue
        known = sorted({s.section for s in SETTINGS} | {"remotes"})
        if section not in known:
            raise ConfigError(
                f"{where}[{section}]: unknown section; expected one of {', '.join(known)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}{section} must be a table ([{section}])")
        for key, value in table.items():
            setting = _BY_NAME.get((section, key))
            if (section, key) in _REPLACED:
                raise ConfigError(
                    f"{where}[{section}] {key} was replaced by {_REPLACED[(section, key)]}; "
                    "see README"
                )
            if setting is None:
                keys = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(f"{where}[{section}] {key}: unknown key; expected one of {keys}")
            values[(section, key)] = _validate(
                where, section, key, value, setting.type, setting.check
            )
    return values, remotes


def parse_flag(setting: Setting, text: str) -> Any:
    """A command-line value, converted and checked like the file's.

    Raises:
        ConfigError: names the flag, the value and what was expected.
    """
    value: Any = text
    if setting.type is int:
        try:
            value = int(text)
        except ValueError:
            value = text
    elif setting.type is bool:
        value = {"true": True, "false": False}.get(text.lower(), text)
    elif setting.type is list:
        value = [part.strip() for part in text.split(",") if part.strip()]
    expected = None if _typed(setting.type, value) else _type_name(setting.type)
    if expected is None and setting.check is not None:
        expected = setting.check(value)
    if expected is not None:
        raise ConfigError(f"{setting.flag} {text!r}: expected {expected}")
    return value


def load(path: Path | None, overrides: Mapping[tuple[str, str], Any] | None = None) -> Settings:
    """Defaults, then the file (if any), then the overrides (already checked flags).

    A relative ``[storage] path`` in the file is taken from the file's folder, so that one
    file names one archive whatever the current folder; a flag's is taken from the current one.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds a wrong value.
    """
    values: dict[tuple[str, str], Any] = {}
    remotes = Peers()
    from_file: dict[tuple[str, str], Any] = {}
    if path is not None:
        from_file, remotes = _from_file(path)
        if ("storage", "path") in from_file:
            from_file[("storage", "path")] = str(path.parent / from_file[("storage", "path")])
        for key in _TLS_FILES:  # like [storage] path: taken from the file's folder
            if from_file.get(("tls", key)):
                from_file[("tls", key)] = str(path.parent / from_file[("tls", key)])
        values.update(from_file)
    values.update(overrides or {})
    sections = {
        attribute: cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for (section, key), value in values.items()
                if section == name
            }
        )
        for name, (attribute, cls) in _SECTIONS.items()
    }
    explicit = frozenset(from_file) | frozenset(overrides or {})
    settings = Settings(
        **sections, remotes=remotes, source=str(path) if path else "defaults", explicit=explicit
    )
    _check_tls(settings, f"{path}: " if path else "")
    return settings


_TLS_FILES = ("certificate", "private_key", "ca")


def _check_tls(settings: Settings, where: str) -> None:
    """What TLS needs of [tls]: a certificate and its key wherever TLS is used, a CA where
    client certificates are required (PS3.15 B.9: both ends present one).

    Raises:
        ConfigError: names what asks for TLS and what it lacks.
    """
    server, tls = settings.server, settings.tls
    users = [
        *(["[server] dicom_tls_port"] if server.dicom_tls_port else []),
        *(["[server] http_tls"] if server.http_tls else []),
        *(f"[remotes.{peer.name}] tls" for peer in settings.remotes if peer.tls),
    ]
    if bool(tls.certificate) != bool(tls.private_key) or (users and not tls.certificate):
        lacking = "private_key" if tls.certificate else "certificate"
        raise ConfigError(
            f"{where}[tls] {lacking} is empty: "
            + (f"{', '.join(users)} needs" if users else "[tls] takes")
            + " a certificate and its private key (PEM files)"
        )
    if server.dicom_tls_port and tls.require_client_certificate and not tls.ca:
        raise ConfigError(
            f"{where}[tls] ca is empty: require_client_certificate = true needs the CA "
            "certificates clients' certificates are checked against (or set it to false)"
        )
    if server.dicom_tls_port and server.dicom_tls_port == server.dicom_port:
        raise ConfigError(
            f"{where}[server] dicom_tls_port = {server.dicom_tls_port}: expected another port "
            "than dicom_port"
        )


def defaults() -> Settings:
    """The settings when no file and no flag says otherwise (what tests build options from)."""
    return load(None)
