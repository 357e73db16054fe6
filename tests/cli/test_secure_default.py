"""Secure by default: ``pypacs serve`` opens its HTTP port beyond this machine without
authentication only when told to, and says so at every start; a bad OIDC key file stops
start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from oidcissuer import AUDIENCE, ISSUER, Issuer
from pypacs.server import is_loopback

from serving import RunningServer

WARNING = (
    '[server] host = "0.0.0.0" with [auth] mode = "none" and allow_anonymous = true: anyone '
    "who reaches the HTTP port may read, store and delete"
)


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pypacs serve`` expected to stop before it listens."""
    command = [sys.executable, "-m", "pypacs", "serve", "--data", str(tmp_path / "data")]
    command += ["--dicom-port", "0", "--http-port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "pacs.example.org"])
def test_an_open_host_without_authentication_is_refused(tmp_path: Path, host: str) -> None:
    done = serve(tmp_path, "--host", host)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f'pypacs: configuration error: [server] host = "{host}" opens the HTTP port beyond '
        'this machine, and [auth] mode = "none" would let anyone who reaches it read, store '
        'and delete. Set up users: [auth] mode = "local" (--auth-mode local), then `pypacs '
        'user add NAME --role admin`; or use an OpenID Connect issuer ([auth] mode = "oidc"); '
        "or, to serve without authentication anyway, set [auth] allow_anonymous = true\n"
    )
    assert not (tmp_path / "data").exists()  # stopped before anything was made


def test_allow_anonymous_serves_and_warns_at_every_start(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    data = tmp_path / "open"
    for start in (1, 2):
        srv = server_factory("--host", "0.0.0.0", "--allow-anonymous", "true", data=data)
        with httpx.Client(timeout=60) as client:
            health = client.get(f"http://127.0.0.1:{srv.http_port}/api/health")
        assert health.status_code == 200
        srv.stop()
        # The log file is appended to: one warning a start.
        assert srv.log().count(f"WARNING pypacs.server: {WARNING}\n") == start


def test_loopback_serves_without_a_warning(server: RunningServer) -> None:
    with httpx.Client(timeout=60) as client:
        assert client.get(f"http://127.0.0.1:{server.http_port}/api/health").status_code == 200
    assert "allow_anonymous" not in server.log()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("localhost.example.org", False),
        ("128.0.0.1", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def oidc_flags(jwks_file: Path) -> list[str]:
    return [
        "--auth-mode",
        "oidc",
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        AUDIENCE,
        "--oidc-jwks-file",
        str(jwks_file),
    ]


def test_oidc_on_an_open_host_starts_without_a_warning(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    issuer = Issuer()
    issuer.add("k1", "EC")
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(issuer.jwks()))
    srv = server_factory("--host", "0.0.0.0", *oidc_flags(keys))
    assert srv.http_port > 0
    srv.stop()
    assert "allow_anonymous" not in srv.log()


def test_a_bad_oidc_key_file_stops_start_up(tmp_path: Path) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text('{"keys": []}')
    done = serve(tmp_path, *oidc_flags(keys))
    assert done.returncode == 2
    assert done.stderr == (
        f"pypacs: configuration error: [auth.oidc] jwks_file = {str(keys)!r}: no usable "
        "signature key in the JWK Set\n"
    )
    done = serve(tmp_path, "--auth-mode", "oidc", "--oidc-issuer", ISSUER)
    assert done.returncode == 2
    assert done.stderr == (
        'pypacs: configuration error: [auth] mode = "oidc" needs [auth.oidc] audience (the '
        "tokens' aud)\n"
    )
