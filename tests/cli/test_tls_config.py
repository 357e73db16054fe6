"""[tls] checked at start: what TLS needs of it, and its files (readable PEM of the right
kind, a key that matches its certificate), each with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypacs.config import load
from pypacs.errors import ConfigError
from pypacs.net.tls import TlsError, client_context, server_context

from certs import Certificates, make_certificates
from helpers import run_pypacs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def files(certs: Certificates, *, ca: bool = True) -> str:
    text = f'certificate = "{certs.server.certificate}"\nprivate_key = "{certs.server.key}"\n'
    return text + (f'ca = "{certs.ca}"\n' if ca else "")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pypacs.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\ndicom_tls_port = 2762\n", "[server] dicom_tls_port needs a certificate"),
        ("[server]\nhttp_tls = true\n", "[server] http_tls needs a certificate"),
        (
            '[remotes.ws]\nae_title = "WS"\nhost = "10.0.0.7"\nport = 104\ntls = true\n',
            "[remotes.ws] tls needs a certificate",
        ),
        ('[tls]\ncertificate = "a.crt"\n', "[tls] private_key is empty"),
    ],
)
def test_tls_without_a_certificate(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert message in str(info.value)
    assert str(tmp_path / "pypacs.toml") in str(info.value)


def test_required_client_certificates_need_a_ca(tmp_path: Path, certs: Certificates) -> None:
    text = "[server]\ndicom_tls_port = 2762\n[tls]\n" + files(certs, ca=False)
    with pytest.raises(ConfigError, match=r"\[tls\] ca is empty: require_client_certificate"):
        load(write(tmp_path, text))
    allowed = text + "require_client_certificate = false\n"
    net = load(write(tmp_path, allowed)).net_options()
    assert net.tls is not None and net.tls.ca == ""
    assert server_context(net.tls).verify_mode == 0  # ssl.CERT_NONE: no CA to check with


def test_the_tls_port_is_another_port(tmp_path: Path, certs: Certificates) -> None:
    text = "[server]\ndicom_port = 2762\ndicom_tls_port = 2762\n[tls]\n" + files(certs)
    with pytest.raises(ConfigError, match="dicom_tls_port = 2762: expected another port"):
        load(write(tmp_path, text))


def test_files_relative_to_the_configuration_file(tmp_path: Path, certs: Certificates) -> None:
    folder = certs.ca.parent
    text = '[tls]\ncertificate = "pypacs.crt"\nprivate_key = "pypacs.key"\nca = "ca.crt"\n'
    tls = load(write(folder, text)).tls_options()
    assert tls is not None
    assert (tls.certificate, tls.private_key, tls.ca) == (
        str(folder / "pypacs.crt"),
        str(folder / "pypacs.key"),
        str(folder / "ca.crt"),
    )
    context = server_context(tls)
    assert context.minimum_version.name == "TLSv1_2"
    assert context.maximum_version.name == "TLSv1_3"
    assert client_context(tls).check_hostname is False


def test_files_that_are_missing_or_not_pem(tmp_path: Path, certs: Certificates) -> None:
    missing = "[tls]\n" + files(certs).replace(str(certs.ca), str(tmp_path / "nope.crt"))
    with pytest.raises(ConfigError, match=r"\[tls\] ca = '.*nope.crt': cannot read"):
        load(write(tmp_path, missing)).net_options()
    swapped = f'[tls]\ncertificate = "{certs.server.key}"\nprivate_key = "{certs.server.key}"\n'
    with pytest.raises(ConfigError, match=r"\[tls\] certificate = .*: expected a PEM file holding"):
        load(write(tmp_path, swapped)).net_options()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    text = f'[tls]\ncertificate = "{certs.server.certificate}"\nprivate_key = "{garbage}"\n'
    with pytest.raises(ConfigError, match=r"\[tls\] private_key = .*: expected a PEM file"):
        load(write(tmp_path, text)).net_options()


def test_a_key_of_another_certificate(tmp_path: Path, certs: Certificates) -> None:
    text = (
        f'[tls]\ncertificate = "{certs.server.certificate}"\n'
        f'private_key = "{certs.client.key}"\nca = "{certs.ca}"\n'
    )
    tls = load(write(tmp_path, text)).tls_options()
    assert tls is not None
    with pytest.raises(TlsError, match="cannot be used together"):
        server_context(tls)
    # pypacs serve stops before listening, with the message.
    config = write(tmp_path, "[server]\ndicom_tls_port = 2762\n" + text)
    done = run_pypacs(
        "serve", "--config", str(config), "--dicom-port", "0", "--http-port", "0", cwd=tmp_path
    )
    assert done.returncode != 0
    assert "cannot be used together" in done.stderr
    assert "listening" not in done.stdout


def test_pypacs_echo_names_what_tls_lacks(tmp_path: Path) -> None:
    config = write(
        tmp_path, '[remotes.ws]\nae_title = "WS"\nhost = "127.0.0.1"\nport = 9\ntls = true\n'
    )
    done = run_pypacs("echo", "--config", str(config), "ws", cwd=tmp_path)
    assert done.returncode == 2
    assert "[remotes.ws] tls needs a certificate and its private key" in done.stderr
