"""Fixtures of the audit trail's tests: the schema every message must pass, and syslog
receivers (UDP, RFC 5426; TLS with octet counting, RFC 5425) on free ports."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

SCHEMA = Path(__file__).with_name("audit-message.rng")


@pytest.fixture(scope="session")
def validate() -> Callable[[str], etree._Element]:
    """Parse one message and check it against the schema; the parsed root."""
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))

    def check(text: str) -> etree._Element:
        root = etree.fromstring(text.encode())
        if not schema.validate(root):
            raise AssertionError(f"{schema.error_log.last_error}: {text}")
        return root

    return check


@dataclass
class Received:
    """What a syslog receiver got: each syslog message's bytes, in order."""

    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def all(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)

    def add(self, data: bytes) -> None:
        with self.lock:
            self.messages.append(data)


@pytest.fixture
def udp_receiver() -> Iterator[tuple[int, Received]]:
    """A UDP syslog receiver on a free port: one message per datagram (RFC 5426 3.1)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    received = Received()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(70_000)
            except TimeoutError:
                continue
            received.add(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join(5)
    sock.close()


@dataclass(frozen=True)
class Tls:
    ca: Path  # the self-signed certificate the receiver presents (and clients trust)
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("audit-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syslog")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca, key_path = folder / "syslog.pem", folder / "syslog.key"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Tls(ca, key_path)


def read_octet_counted(stream: ssl.SSLSocket, received: Received) -> None:
    """RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG, one after the other, until the peer closes."""
    buffer = b""
    while True:
        chunk = stream.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b" " in buffer:
            length, _, rest = buffer.partition(b" ")
            assert length.isdigit() and not length.startswith(b"0"), buffer[:40]
            if len(rest) < int(length):
                break
            received.add(rest[: int(length)])
            buffer = rest[int(length) :]


@pytest.fixture
def tls_receiver(tls_files: Tls) -> Iterator[tuple[int, Received]]:
    """A TLS syslog receiver on a free port, reading octet-counted frames."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.ca, tls_files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    received = Received()
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as stream:
                read_octet_counted(stream, received)
        except OSError:
            pass

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1], received
    stop.set()
    thread.join(5)
    listener.close()
