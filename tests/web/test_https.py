"""``[server] http_tls``: the HTTP port over TLS (BCP 195: TLS 1.2 and 1.3), checked with
the CA that signed pypacs' certificate; plain HTTP and TLS 1.1 to it fail."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable

import httpx
import pytest

from certs import Certificates, make_certificates
from serving import RunningServer


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def https_server(
    server_factory: Callable[..., RunningServer], certs: Certificates
) -> RunningServer:
    return server_factory(
        "--http-tls",
        "true",
        "--tls-certificate",
        str(certs.server.certificate),
        "--tls-private-key",
        str(certs.server.key),
    )


def trusting(ca: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_https_with_the_ca(https_server: RunningServer, certs: Certificates) -> None:
    url = f"https://127.0.0.1:{https_server.http_port}/api/health"
    with httpx.Client(verify=trusting(certs.ca), timeout=30) as client:
        response = client.get(url)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        assert response.extensions["network_stream"].get_extra_info("ssl_object").version() in (
            "TLSv1.2",
            "TLSv1.3",
        )
    # A client trusting another CA refuses the server.
    with (
        httpx.Client(verify=trusting(certs.other_ca), timeout=30) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(url)


def test_plain_http_to_the_https_port_fails(https_server: RunningServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_server.http_port}/api/health", timeout=30)
    # The port goes on serving HTTPS.
    response = httpx.get(
        f"https://127.0.0.1:{https_server.http_port}/api/health", verify=False, timeout=30
    )
    assert response.status_code == 200


def test_tls_1_1_is_refused(https_server: RunningServer) -> None:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{https_server.http_port}", "-tls1_1"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Cipher is (NONE)" in done.stdout
    ok = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{https_server.http_port}", "-tls1_2"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Protocol  : TLSv1.2" in ok.stdout
    assert "Cipher is ECDHE-" in ok.stdout
