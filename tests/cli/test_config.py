"""Configuration: every key optional, flags override, wrong values name file, key and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pypacs.config import SETTINGS, load, parse_flag
from pypacs.errors import ConfigError
from pypacs.model.access import ALL_SERVICES, Service


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pypacs.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load(None)
    net, web, archive = settings.net_options(), settings.web_options(), settings.archive_options()
    assert (net.ae_title, net.host, net.port) == ("PYPACS", "127.0.0.1", 11112)
    assert (web.host, web.port) == ("127.0.0.1", 8080)
    assert archive.database_url == "sqlite:///pypacs-data/index.sqlite"
    assert archive.blob_root == "pypacs-data/blobs"
    assert archive.overwrite_duplicates is False


def test_file_values_and_remotes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
ae_title = "ARCHIVE1"
dicom_port = 104
[storage]
path = "/srv/pacs"
overwrite_duplicates = true
[database]
url = "postgresql+psycopg://pacs@db/pacs"
[remotes.WORKSTATION]
ae_title = "WS1"
host = "10.0.0.7"
port = 104
""",
    )
    settings = load(path)
    assert settings.net_options().ae_title == "ARCHIVE1"
    assert settings.net_options().port == 104
    assert settings.archive_options().database_url == "postgresql+psycopg://pacs@db/pacs"
    assert settings.archive_options().blob_root == "/srv/pacs/blobs"
    assert settings.archive_options().overwrite_duplicates is True
    (remote,) = settings.remotes
    assert (remote.name, remote.ae_title, remote.host, remote.port) == (
        "WORKSTATION",
        "WS1",
        "10.0.0.7",
        104,
    )


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\ndicom_port = 104\n")
    (setting,) = [s for s in SETTINGS if s.key == "dicom_port"]
    settings = load(path, {("server", "dicom_port"): parse_flag(setting, "2104")})
    assert settings.net_options().port == 2104


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\ndicom_port = "abc"\n', '[server] dicom_port = "abc": expected an integer'),
        (
            "[server]\ndicom_port = 70000\n",
            "[server] dicom_port = 70000: expected an integer 0-65535",
        ),
        (
            '[server]\nae_title = "THIS-TITLE-IS-TOO-LONG"\n',
            '[server] ae_title = "THIS-TITLE-IS-TOO-LONG": expected an AE title',
        ),
        ('[server]\nae_title = "A\\\\B"\n', "expected an AE title"),
        (
            '[storage]\noverwrite_duplicates = "yes"\n',
            '[storage] overwrite_duplicates = "yes": expected true or false',
        ),
        ("[server]\nport = 1\n", "[server] port: unknown key; expected one of ae_title"),
        ("[srever]\nhost = 'x'\n", "[srever]: unknown section"),
        ('[logging]\nlevel = "LOUD"\n', '[logging] level = "LOUD": expected one of DEBUG, INFO'),
        ('[remotes.WS]\nae_title = "WS"\nhost = "h"\n', "[remotes.WS] lacks port"),
        (
            '[remotes.WS]\nae_title = "WS"\nhost = "h"\nport = 0\n',
            "[remotes.WS] port = 0: expected an integer 1-65535",
        ),
        ('[remotes.WS]\naet = "WS"\n', "[remotes.WS] aet: unknown key"),
        ("[server\n", "not valid TOML"),
        (
            '[retrieve]\nallowed_aes = ["WS"]\n',
            "[retrieve] allowed_aes was replaced by [remotes.NAME] allow and [access] "
            "unknown_callers; see README",
        ),
        (
            '[remotes.WS]\nae_title = "WS"\nhost = "h"\nport = 104\nallow = ["echo", "push"]\n',
            "[remotes.WS] allow = ['echo', 'push']: expected a list of services among "
            "echo, store, find, get, move",
        ),
        (
            '[remotes.WS]\nae_title = "WS"\nhost = "h"\nport = 104\ncheck_host = "yes"\n',
            '[remotes.WS] check_host = "yes": expected true or false',
        ),
        (
            '[access]\nunknown_callers = "echo"\n',
            '[access] unknown_callers = "echo": expected a list',
        ),
        (
            '[access]\nunknown_callers = ["ECHO"]\n',
            "[access] unknown_callers = ['ECHO']: expected a list of services among echo",
        ),
        ("[access]\ncheck_called_ae = 1\n", "[access] check_called_ae = 1: expected true or false"),
        (
            "[retrieve]\nmax_move_associations = 0\n",
            "[retrieve] max_move_associations = 0: expected a positive integer",
        ),
        (
            "[web]\nqido_default_limit = -5\n",
            "[web] qido_default_limit = -5: expected an integer >= 0",
        ),
        ("[web]\nstow_max_bytes = 0\n", "[web] stow_max_bytes = 0: expected a positive integer"),
        ('[web]\nstow_max_bytes = "1G"\n', '[web] stow_max_bytes = "1G": expected an integer'),
    ],
)
def test_wrong_values_name_file_key_value_and_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_retrieve_and_access_settings_reach_the_network_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[retrieve]\nmax_move_associations = 3\n"
        '[access]\nunknown_callers = ["echo", "find"]\ncheck_called_ae = false\n'
        '[remotes.WS]\nae_title = "WS1"\nhost = "h"\nport = 104\nallow = ["store"]\n'
        "check_host = true\n",
    )
    options = load(path).net_options()
    assert options.max_move_associations == 3
    assert options.unknown_callers == (Service.ECHO, Service.FIND)
    assert options.check_called_ae is False
    peer = options.remotes.by_ae_title("WS1")
    assert peer is not None
    assert (peer.allow, peer.check_host) == ((Service.STORE,), True)
    defaults = load(None).net_options()
    assert (defaults.unknown_callers, defaults.check_called_ae) == (ALL_SERVICES, True)
    flag = next(s for s in SETTINGS if s.key == "unknown_callers")
    assert parse_flag(flag, "echo, find") == ["echo", "find"]
    assert parse_flag(flag, "") == []
    with pytest.raises(ConfigError, match="--unknown-callers 'echo,push': expected a list of"):
        parse_flag(flag, "echo,push")


def test_web_settings_reach_the_web_options(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nae_title = "ARCH"\n[web]\nqido_default_limit = 0\n')
    options = load(path, {("web", "stow_max_bytes"): 1000}).web_options()
    assert (options.qido_default_limit, options.stow_max_bytes) == (0, 1000)
    assert options.ae_title == "ARCH"
    flag = next(s for s in SETTINGS if s.key == "qido_default_limit")
    with pytest.raises(ConfigError, match="--qido-default-limit"):
        parse_flag(flag, "lots")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(tmp_path / "absent.toml")


def test_cli_reports_configuration_errors_with_exit_status_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\ndicom_port = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "pypacs", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        f"configuration error: {path}: [server] dicom_port = -1: expected an integer 0-65535"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_cli_flag_errors_name_the_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pypacs", "serve", "--dicom-port", "eleven"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--dicom-port 'eleven': expected an integer" in result.stderr


def test_cli_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pypacs", "launch"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr


def test_cli_database_url_errors(tmp_path: Path) -> None:
    for url, message in [
        ("not a url", '[database] url = "not a url": expected a database URL'),
        ("mysql://root@127.0.0.1/x", "unsupported database 'mysql'"),
    ]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pypacs",
                "check",
                "--data",
                str(tmp_path),
                "--database-url",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_cli_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pypacs",
            "check",
            "--data",
            str(tmp_path),
            "--database-url",
            "postgresql+psycopg://postgres@127.0.0.1:1/none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "pypacs: index unavailable" in result.stderr
    assert "Traceback" not in result.stderr
