"""README's complete example of a hospital network ("A hospital network, all together") is a
configuration pypacs loads: its TOML block, with the files it names made by the test under a
folder of its own, gives the settings the text describes and passes the start-up checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pypacs.config import load
from pypacs.errors import ConfigError
from pypacs.model.access import Service
from pypacs.server import check_access

from certs import make_certificates

README = Path(__file__).parents[2] / "README.md"
HEADING = "### A hospital network, all together"


def example() -> str:
    """The first TOML block after the heading."""
    text = README.read_text()
    assert HEADING in text
    found = re.search(r"```toml\n(.*?)```", text[text.index(HEADING) :], re.S)
    assert found is not None
    return found.group(1)


def placed(tmp_path: Path) -> Path:
    """The example as a file, its /etc/pypacs files made (PEM) under ``tmp_path``."""
    certs = make_certificates(tmp_path / "made")
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "tls" / "pacs1.crt").write_bytes(certs.server.certificate.read_bytes())
    (etc / "tls" / "pacs1.key").write_bytes(certs.server.key.read_bytes())
    (etc / "tls" / "hospital-ca.crt").write_bytes(certs.ca.read_bytes())
    text = example()
    assert text.count("/etc/pypacs/") == 3
    config = tmp_path / "pypacs.toml"
    config.write_text(text.replace("/etc/pypacs/", f"{etc}/"))
    return config


def test_the_hospital_example_loads_as_described(tmp_path: Path) -> None:
    settings = load(placed(tmp_path))
    net, web, audit = settings.net_options(), settings.web_options(), settings.audit_options()
    check_access(settings)  # the open host passes: users come from the OIDC issuer
    assert (net.port, net.tls_port, web.port, web.https) == (11112, 2762, 8443, True)
    assert net.tls is not None and net.tls.require_client_certificate
    assert net.unknown_callers == () and net.check_called_ae
    assert web.auth.mode == "oidc"
    assert web.oidc is not None and web.oidc.roles_claim == "realm_access.roles"
    assert audit.syslog.startswith("tls://") and audit.tls_ca.endswith("hospital-ca.crt")
    peers = {p.ae_title: p for p in net.remotes}
    assert set(peers) == {"CT1", "MR1", "READ1"}
    assert all(p.check_host for p in peers.values())
    assert set(peers["CT1"].allow) == {Service.ECHO, Service.STORE} and not peers["CT1"].tls
    assert peers["READ1"].tls and Service.MOVE in peers["READ1"].allow


def test_the_example_fails_clearly_without_its_files(tmp_path: Path) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text(example().replace("/etc/pypacs/", f"{tmp_path}/missing/"))
    with pytest.raises(ConfigError, match=r"\[tls\] certificate"):
        load(config).net_options()
