"""The web page's session cookie carries ``Secure`` (RFC 6265 4.1.2.5) when the page is
served over HTTPS: by pypacs itself (``[server] http_tls``) or by a trusted proxy in front
that says so (``X-Forwarded-Proto: https``); never over plain HTTP, nor on the word of a
peer that is not a trusted proxy. The log-out's expiring cookie alike."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from certs import Certificates, make_certificates
from helpers import CLI_ENV
from serving import RunningServer, start_pypacs

PASSWORD = "page-user-password"


def serve(folder: Path, extra: str) -> RunningServer:
    """A server with [auth] mode local, ``extra`` settings and the user ``page``."""
    folder.mkdir()
    config = folder / "pypacs.toml"
    config.write_text(
        f'[storage]\npath = "{folder / "data"}"\n' + extra + '[auth]\nmode = "local"\n'
    )
    srv = start_pypacs(folder / "data", "--config", str(config))
    command = ["user", "add", "page", "--role", "reader", "--password-stdin"]
    done = subprocess.run(
        [sys.executable, "-m", "pypacs", *command, "--config", str(config)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=CLI_ENV,
    )
    assert done.returncode == 0, done.stderr
    return srv


def attributes(set_cookie: str) -> set[str]:
    """The cookie's attribute names, lower case (RFC 6265 5.2)."""
    return {part.split("=", 1)[0].strip().lower() for part in set_cookie.split(";")[1:]}


def log_in_and_out(http: httpx.Client, **headers: str) -> tuple[set[str], set[str]]:
    """The attributes of the log-in's and the log-out's Set-Cookie."""
    login = http.post("/api/session", data={"name": "page", "password": PASSWORD}, headers=headers)
    assert login.status_code == 200, login.text
    assert login.headers["set-cookie"].startswith("pypacs_session=")
    origin = {"Origin": str(http.base_url).rstrip("/")}
    logout = http.delete("/api/session", headers={**headers, **origin})
    assert logout.status_code == 204, logout.text
    return attributes(login.headers["set-cookie"]), attributes(logout.headers["set-cookie"])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("cookie-certs"))


@pytest.fixture(scope="module")
def https_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[RunningServer]:
    srv = serve(
        tmp_path_factory.mktemp("cookie") / "https",
        f'[server]\nhttp_tls = true\n[tls]\ncertificate = "{certs.server.certificate}"\n'
        f'private_key = "{certs.server.key}"\n',
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve(
        tmp_path_factory.mktemp("cookie") / "proxied", '[web]\ntrusted_proxies = ["127.0.0.1"]\n'
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve(tmp_path_factory.mktemp("cookie") / "plain", "")
    yield srv
    srv.stop()


def test_over_https_the_cookie_is_secure(https_server: RunningServer, certs: Certificates) -> None:
    verify = ssl.create_default_context(cafile=str(certs.ca))
    url = f"https://127.0.0.1:{https_server.http_port}"
    with httpx.Client(base_url=url, verify=verify, timeout=60) as http:
        login, logout = log_in_and_out(http)
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= login
    assert "secure" in logout


def test_behind_a_trusted_proxy_saying_https_the_cookie_is_secure(
    behind_proxy: RunningServer,
) -> None:
    url = f"http://127.0.0.1:{behind_proxy.http_port}"
    with httpx.Client(base_url=url, timeout=60) as http:
        # The proxy says the page was asked for over HTTPS.
        login = http.post(
            "/api/session",
            data={"name": "page", "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert login.status_code == 200, login.text
        assert "secure" in attributes(login.headers["set-cookie"])
        # The same proxy forwarding plain HTTP: no Secure.
        cookie, _ = log_in_and_out(http)
    assert "secure" not in cookie and "httponly" in cookie


def test_over_plain_http_the_cookie_is_not_secure(plain: RunningServer) -> None:
    url = f"http://127.0.0.1:{plain.http_port}"
    with httpx.Client(base_url=url, timeout=60) as http:
        login, logout = log_in_and_out(http)
        # A peer that is no trusted proxy cannot make it so.
        claimed, _ = log_in_and_out(http, **{"X-Forwarded-Proto": "https"})
    assert "secure" not in login and "secure" not in logout and "secure" not in claimed
    assert {"httponly", "samesite"} <= login
