"""DICOM over TLS (PS3.15 B.9/B.10, BCP 195) on a running ``pypacs serve``: DCMTK's echoscu,
storescu and findscu with certificates against the TLS port beside the plain one; storescp
over TLS as a C-MOVE destination; clients without, with expired or with foreign certificates,
TLS 1.1 and plain DICOM refused on that connection alone; half-open connections leave room
for a real peer; ``pypacs echo`` to a TLS remote."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certs import Certificates, KeyPair, make_certificates
from dicomgen import Spec, sop_uid, study_uid, write
from helpers import echo, index_rows, run_pypacs, wait_for
from qrscp import free_port
from serving import RunningServer

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
ARTIM = 3  # [server] artim_timeout of the servers here
DCMTK_TIMEOUT = 60


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def tls_flags(certs: Certificates, *, require: bool = True) -> list[str]:
    return [
        "--dicom-tls-port",
        str(free_port()),
        "--tls-certificate",
        str(certs.server.certificate),
        "--tls-private-key",
        str(certs.server.key),
        "--tls-ca",
        str(certs.ca),
        "--require-client-certificate",
        "true" if require else "false",
        "--artim-timeout",
        str(ARTIM),
    ]


@pytest.fixture
def tls_server(server_factory: Callable[..., RunningServer], certs: Certificates) -> RunningServer:
    srv = server_factory(*tls_flags(certs))
    assert srv.dicom_tls_port > 0
    return srv


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, env=NODELAY, timeout=DCMTK_TIMEOUT
    )


def with_cert(pair: KeyPair, ca: Path) -> list[str]:
    """DCMTK's TLS options: our key and certificate, the CA the server is checked against;
    the Non-downgrading BCP 195 profile is DCMTK's default (+py)."""
    return ["+tls", str(pair.key), str(pair.certificate), "+cf", str(ca)]


def echoscu(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", "-aec", "PYPACS", "-to", "20", *tls, "127.0.0.1", str(port))


def tls_echo_ok(srv: RunningServer, certs: Certificates) -> bool:
    done = echoscu(srv.dicom_tls_port, *with_cert(certs.client, certs.ca))
    return done.returncode == 0


def handshake_warnings(srv: RunningServer) -> list[str]:
    return [
        line for line in srv.log().splitlines() if "WARNING" in line and "TLS handshake" in line
    ]


def wait_for_warning(srv: RunningServer, reason: str) -> str:
    def found() -> str | None:
        return next((w for w in handshake_warnings(srv) if reason in w), None)

    line: str = wait_for(found, timeout=30, what=f"a TLS warning naming {reason!r}")
    assert "127.0.0.1" in line
    return line


def test_echo_store_and_find_over_tls(
    tls_server: RunningServer, certs: Certificates, tmp_path: Path
) -> None:
    srv = tls_server
    assert echoscu(srv.dicom_tls_port, *with_cert(certs.client, certs.ca)).returncode == 0
    specs = [Spec("TLS1", "Secure^Sam", 1, 1, i) for i in (1, 2, 3)]
    specs.append(Spec("TLS2", "Other^Olga", 1, 1, 1))
    files = [write(spec, tmp_path) for spec in specs]
    stored = dcmtk(
        "storescu",
        "-aec",
        "PYPACS",
        *with_cert(certs.client, certs.ca),
        "127.0.0.1",
        str(srv.dicom_tls_port),
        *map(str, files),
    )
    assert stored.returncode == 0, stored.stderr
    uids = {row["sop_instance_uid"] for row in index_rows(srv.database_url, "instance")}
    assert uids == {sop_uid(s.patient_id, s.study, s.series, s.instance) for s in specs}
    found = dcmtk(
        "findscu",
        "-aec",
        "PYPACS",
        "-S",
        "-v",
        *with_cert(certs.client, certs.ca),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=TLS1",
        "-k",
        "PatientName",
        "-k",
        "NumberOfStudyRelatedInstances",
        "127.0.0.1",
        str(srv.dicom_tls_port),
    )
    assert found.returncode == 0, found.stderr
    out = found.stdout + found.stderr
    # One match (a pending response), then the final one.
    assert re.findall(r"Find Response: \d+ \(Pending\)", out) == ["Find Response: 1 (Pending)"]
    assert "Received Final Find Response (Success)" in out
    assert "Secure^Sam" in out and "Other^Olga" not in out
    assert re.search(r"\(0020,1208\) IS \[3 ?\]", out), out
    # The plain port serves beside the TLS one, and finds what came over TLS.
    assert echo(srv.dicom_port) == "0x0000"
    plain = dcmtk(
        "findscu",
        "-aec",
        "PYPACS",
        "-S",
        "-v",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=TLS2",
        "-k",
        "PatientName",
        "127.0.0.1",
        str(srv.dicom_port),
    )
    assert plain.returncode == 0 and "Other^Olga" in plain.stdout + plain.stderr


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("none", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("expired", "certificate has expired"),
        ("stranger", "unable to get local issuer certificate"),
    ],
)
def test_clients_the_ca_does_not_vouch_for_are_refused(
    tls_server: RunningServer, certs: Certificates, client: str, reason: str
) -> None:
    if client == "none":
        flags = ["+tla", "+cf", str(certs.ca)]
    else:
        pair = certs.expired if client == "expired" else certs.stranger
        flags = with_cert(pair, certs.ca)
    refused = echoscu(tls_server.dicom_tls_port, *flags)
    assert refused.returncode != 0
    assert "Association Request Failed" in refused.stderr
    wait_for_warning(tls_server, reason)
    # That connection alone: the port goes on serving.
    assert tls_echo_ok(tls_server, certs)


def test_no_client_certificate_needed_when_not_required(
    server_factory: Callable[..., RunningServer], certs: Certificates
) -> None:
    srv = server_factory(*tls_flags(certs, require=False))
    anonymous = echoscu(srv.dicom_tls_port, "+tla", "+cf", str(certs.ca))
    assert anonymous.returncode == 0, anonymous.stderr
    # A certificate sent is still checked against the CA (CERT_OPTIONAL).
    stranger = echoscu(srv.dicom_tls_port, *with_cert(certs.stranger, certs.ca))
    assert stranger.returncode != 0
    wait_for_warning(srv, "unable to get local issuer certificate")


def test_client_refuses_a_server_its_ca_does_not_vouch_for(
    tls_server: RunningServer, certs: Certificates
) -> None:
    refused = echoscu(tls_server.dicom_tls_port, *with_cert(certs.client, certs.other_ca))
    assert refused.returncode != 0
    assert "Association Request Failed" in refused.stderr


def test_tls_1_1_is_refused(tls_server: RunningServer, certs: Certificates) -> None:
    # RFC 8996 / BCP 195: no TLS 1.0 or 1.1. OpenSSL's s_client offers only 1.1 here.
    done = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{tls_server.dicom_tls_port}",
            "-tls1_1",
            "-cert",
            str(certs.client.certificate),
            "-key",
            str(certs.client.key),
            "-CAfile",
            str(certs.ca),
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=DCMTK_TIMEOUT,
    )
    # No session: s_client reports no cipher agreed.
    assert "Cipher is (NONE)" in done.stdout
    wait_for_warning(tls_server, "UNSUPPORTED_PROTOCOL")
    assert tls_echo_ok(tls_server, certs)


def test_a_tls_1_2_client_is_served(tls_server: RunningServer, certs: Certificates) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(certs.ca)
    context.load_cert_chain(certs.client.certificate, certs.client.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", tls_server.dicom_tls_port), timeout=20) as raw,
        context.wrap_socket(raw) as sock,
    ):
        assert sock.version() == "TLSv1.2"
        # BCP 195: ECDHE with an AEAD cipher.
        cipher = sock.cipher()
        assert cipher is not None
        name = cipher[0]
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    with (
        socket.create_connection(("127.0.0.1", tls_server.dicom_tls_port), timeout=20) as raw,
        context.wrap_socket(raw) as sock,
    ):
        assert sock.version() == "TLSv1.2"


def test_plain_dicom_to_the_tls_port_is_closed(
    tls_server: RunningServer, certs: Certificates
) -> None:
    plain = echoscu(tls_server.dicom_tls_port)
    assert plain.returncode != 0
    wait_for_warning(tls_server, "WRONG_VERSION_NUMBER")
    assert tls_server.proc.poll() is None
    assert tls_echo_ok(tls_server, certs)
    assert echo(tls_server.dicom_port) == "0x0000"


def test_half_open_connections_leave_room_for_a_tls_peer(
    tls_server: RunningServer, certs: Certificates
) -> None:
    # 40 connections that never begin their handshake: more than the default caps on
    # connections still negotiating (32 in all, 8 from one address); the oldest are closed
    # to make room, and a real peer's handshake and association go through meanwhile.
    silent: list[socket.socket] = []
    try:
        for _ in range(40):
            silent.append(socket.create_connection(("127.0.0.1", tls_server.dicom_tls_port)))
        assert tls_echo_ok(tls_server, certs)
        # Each is closed by the server: by eviction or by ARTIM.
        for sock in silent:
            sock.settimeout(ARTIM * 10)
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    assert tls_echo_ok(tls_server, certs)


@pytest.fixture
def tls_storescp(tmp_path: Path, certs: Certificates) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp over TLS (its own client certificate as its server certificate)."""
    port, folder = free_port(), tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen(
        [
            "storescp",
            "+xa",
            "-aet",
            "TLSSCP",
            "-od",
            str(folder),
            *with_cert(certs.client, certs.ca),
            str(port),
        ],
        env=NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ping = ["-aec", "TLSSCP", *with_cert(certs.client, certs.ca), "127.0.0.1", str(port)]
        wait_for(
            lambda: dcmtk("echoscu", *ping).returncode == 0,
            timeout=30,
            what="storescp over TLS to answer C-ECHO",
        )
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_config(tmp_path: Path, certs: Certificates, port: int) -> Path:
    path = tmp_path / "pypacs.toml"
    path.write_text(
        f"""
[tls]
certificate = "{certs.server.certificate}"
private_key = "{certs.server.key}"
ca = "{certs.ca}"

[remotes.secure]
ae_title = "TLSSCP"
host = "127.0.0.1"
port = {port}
tls = true
"""
    )
    return path


def test_c_move_to_a_tls_destination(
    server_factory: Callable[..., RunningServer],
    certs: Certificates,
    tls_storescp: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, received = tls_storescp
    srv = server_factory("--config", str(write_config(tmp_path, certs, port)))
    specs = [Spec("MOV1", "Move^Mia", 1, 1, i) for i in range(1, 6)]
    (tmp_path / "out").mkdir()
    files = [write(spec, tmp_path / "out") for spec in specs]
    stored = dcmtk("storescu", "-aec", "PYPACS", "127.0.0.1", str(srv.dicom_port), *map(str, files))
    assert stored.returncode == 0, stored.stderr
    moved = dcmtk(
        "movescu",
        "-aec",
        "PYPACS",
        "-aem",
        "TLSSCP",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid('MOV1', 1)}",
        "127.0.0.1",
        str(srv.dicom_port),
    )
    assert moved.returncode == 0, moved.stderr
    names = {p.name.split(".", 1)[1] for p in received.iterdir()}
    assert names == {sop_uid("MOV1", 1, 1, i) for i in range(1, 6)}


def test_pypacs_echo_to_a_tls_remote(
    tls_storescp: tuple[int, Path], certs: Certificates, tmp_path: Path
) -> None:
    port, _ = tls_storescp
    config = write_config(tmp_path, certs, port)
    done = run_pypacs("echo", "--config", str(config), "secure", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "TLSSCP at 127.0.0.1" in done.stdout and "C-ECHO success" in done.stdout
    # Without TLS the same peer does not answer.
    plain = config.read_text().replace("tls = true", "tls = false")
    config.write_text(plain)
    failed = run_pypacs("echo", "--config", str(config), "secure", cwd=tmp_path)
    assert failed.returncode == 2
    # With a CA that did not sign the peer's certificate the handshake fails, and says so.
    other = plain.replace("tls = false", "tls = true").replace(str(certs.ca), str(certs.other_ca))
    config.write_text(other)
    untrusted = run_pypacs("echo", "--config", str(config), "secure", cwd=tmp_path)
    assert untrusted.returncode == 2
    assert "TLS handshake failed" in untrusted.stderr and "certificate verify failed" in (
        untrusted.stderr
    )
