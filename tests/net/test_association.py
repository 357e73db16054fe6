"""One association's state machine over real sockets: the requestor side (connect), release
and its collision, A-ABORT, the idle timeout, and TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pypacs.net import dimse, pdu
from pypacs.net.acceptor import Acceptor, Limits, Offer, negotiate
from pypacs.net.association import (
    Aborted,
    Association,
    Decision,
    Identity,
    Rejected,
    Timeouts,
    connect,
    rejection,
)

VERIFICATION = "1.2.840.10008.1.1"
IVRLE = "1.2.840.10008.1.2"
TIMEOUTS = Timeouts(artim=2.0, pdu_read=1.0, dimse_idle=0.5)
OFFERS = {VERIFICATION: Offer(frozenset({IVRLE}))}
RQ = pdu.AssociateRQ(
    called_ae="PYPACS",
    calling_ae="SCU",
    contexts=(pdu.PresentationContextRQ(1, VERIFICATION, (IVRLE,)),),
    user=pdu.UserInformation(max_length=16384, implementation_class_uid="1.2.3"),
)


def decide(rq: pdu.AssociateRQ, peer: tuple[str, int]) -> Decision:
    if rq.called_ae != "PYPACS":
        return rejection(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_CALLED_AE_NOT_RECOGNIZED)
    return negotiate(rq, OFFERS)


Outcomes = list[object]


def serve(
    service: Callable[[Association], None], ssl_context: ssl.SSLContext | None = None
) -> Acceptor:
    acceptor = Acceptor(
        "127.0.0.1",
        0,
        decide=decide,
        on_association=service,
        identity=Identity(32768, "1.2.3.4", "TEST"),
        timeouts=TIMEOUTS,
        limits=Limits(),
        ssl_context=ssl_context,
    )
    acceptor.start()
    return acceptor


@pytest.fixture
def outcomes() -> Outcomes:
    return []


@pytest.fixture
def echo_server(outcomes: Outcomes) -> Iterator[Acceptor]:
    def service(assoc: Association) -> None:
        try:
            while (message := assoc.receive()) is not None:
                assert message.command.message_id is not None
                assoc.send_message(message.context_id, dimse.echo_rsp(message.command.message_id))
            outcomes.append(("released", assoc.counters.messages_received))
        except Aborted as exc:
            outcomes.append(("aborted", exc.source, exc.reason))

    server = serve(service)
    yield server
    server.stop()


def echo(assoc: Association, message_id: int) -> int | None:
    assoc.send_message(1, dimse.echo_rq(message_id))
    answer = assoc.receive()
    assert answer is not None
    assert answer.command.message_id_being_responded_to == message_id
    return answer.command.status


def test_connect_echo_and_release(echo_server: Acceptor, outcomes: Outcomes) -> None:
    assoc = connect("127.0.0.1", echo_server.address[1], RQ, TIMEOUTS)
    assert assoc.peer_max_pdu == 32768
    assert assoc.ac.user.implementation_version_name == "TEST"
    assert [(c.id, c.transfer_syntax, c.scu, c.scp) for c in assoc.contexts.values()] == [
        (1, IVRLE, True, False)
    ]
    assert [echo(assoc, i) for i in (1, 2, 3)] == [0, 0, 0]
    assert assoc.counters.messages_sent == 3
    assoc.release()
    assert _wait(lambda: outcomes == [("released", 3)])


def test_connect_rejected_carries_the_reason(echo_server: Acceptor) -> None:
    with pytest.raises(Rejected) as caught:
        connect("127.0.0.1", echo_server.address[1], _with(called_ae="OTHER"), TIMEOUTS)
    rj = caught.value.rj
    assert (rj.result, rj.source, rj.reason) == (
        pdu.RJ_PERMANENT,
        pdu.RJ_SOURCE_USER,
        pdu.RJ_USER_CALLED_AE_NOT_RECOGNIZED,
    )


def test_an_abort_from_the_peer_ends_the_service(echo_server: Acceptor, outcomes: Outcomes) -> None:
    assoc = connect("127.0.0.1", echo_server.address[1], RQ, TIMEOUTS)
    assert echo(assoc, 1) == 0
    assoc.abort(reason=pdu.ABORT_NOT_SPECIFIED)
    assert _wait(lambda: outcomes == [("aborted", pdu.ABORT_SOURCE_USER, 0)])


def test_an_idle_association_is_aborted(echo_server: Acceptor, outcomes: Outcomes) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.address[1]), timeout=5) as sock:
        sock.sendall(rq_bytes())
        assert read_pdu(sock)[0] == pdu.ASSOCIATE_AC
        pdu_type, body = read_pdu(sock)  # we say nothing for longer than dimse_idle
        assert pdu_type == pdu.ABORT
        assert body[2] == pdu.ABORT_SOURCE_PROVIDER
    assert _wait(lambda: len(outcomes) == 1 and outcomes[0][0] == "aborted")  # type: ignore[index]


def _raw_acceptor(script: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    """A one-connection peer that answers the RQ with an AC, then runs ``script``."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        with conn:
            conn.settimeout(5)
            read_pdu(conn)
            ac = pdu.AssociateAC(
                "PYPACS", "SCU", (pdu.PresentationContextAC(1, 0, IVRLE),), RQ.user
            )
            conn.sendall(pdu.encode(ac))
            script(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def test_release_collision_as_requestor() -> None:
    seen: list[int] = []

    def peer(conn: socket.socket) -> None:
        seen.append(read_pdu(conn)[0])  # our A-RELEASE-RQ
        conn.sendall(pdu.encode(pdu.ReleaseRQ()))  # the collision
        seen.append(read_pdu(conn)[0])  # the requestor answers first (AR-9)
        conn.sendall(pdu.encode(pdu.ReleaseRP()))
        seen.append(read_pdu(conn)[0])  # then closes (AR-3): 0

    port, thread = _raw_acceptor(peer)
    assoc = connect("127.0.0.1", port, RQ, TIMEOUTS)
    assoc.release()
    thread.join(5)
    assert seen == [pdu.RELEASE_RQ, pdu.RELEASE_RP, 0]


def test_release_collision_as_acceptor(outcomes: Outcomes) -> None:
    def service(assoc: Association) -> None:
        message = assoc.receive()
        assert message is not None
        assoc.release()
        outcomes.append("released")

    server = serve(service)
    try:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as sock:
            sock.sendall(rq_bytes())
            assert read_pdu(sock)[0] == pdu.ASSOCIATE_AC
            sock.sendall(
                pdu.pdata_header(len(command := dimse.echo_rq(1)) + 6)
                + pdu.pdv_header(1, True, True, len(command))
                + command
            )
            assert read_pdu(sock)[0] == pdu.RELEASE_RQ
            sock.sendall(pdu.encode(pdu.ReleaseRQ()))  # collision: we are the requestor
            sock.sendall(pdu.encode(pdu.ReleaseRP()))  # AR-9: the requestor answers first
            assert read_pdu(sock)[0] == pdu.RELEASE_RP  # AR-4: then the acceptor
        assert _wait(lambda: outcomes == ["released"])
    finally:
        server.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


# The venv has no cryptography package; the openssl command makes the certificate.
@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
def test_an_association_over_tls(tmp_path: Path, echo_server: Acceptor) -> None:
    key, cert = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    outcomes: Outcomes = []

    def service(assoc: Association) -> None:
        while (message := assoc.receive()) is not None:
            assert message.command.message_id is not None
            assoc.send_message(message.context_id, dimse.echo_rsp(message.command.message_id))
        outcomes.append(assoc.counters.messages_received)

    server = serve(service, server_context)
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        client_context.check_hostname = False
        assoc = connect("127.0.0.1", server.address[1], RQ, TIMEOUTS, client_context)
        assert isinstance(assoc.conn.sock, ssl.SSLSocket)
        assert [echo(assoc, i) for i in (1, 2)] == [0, 0]
        assoc.release()
        assert _wait(lambda: outcomes == [2])
    finally:
        server.stop()


def _with(**changes: object) -> pdu.AssociateRQ:
    fields = {f: getattr(RQ, f) for f in ("called_ae", "calling_ae", "contexts", "user")}
    fields.update(changes)
    return pdu.AssociateRQ(**fields)


def _wait(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()


def rq_bytes() -> bytes:
    return pdu.encode(RQ)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One PDU's type and body; (0, b"") when the peer closed."""
    data = b""
    while len(data) < 6:
        got = sock.recv(6 - len(data))
        if not got:
            return 0, b""
        data += got
    pdu_type, length = struct.unpack(">BxI", data)
    body = b""
    while len(body) < length:
        got = sock.recv(length - len(body))
        assert got
        body += got
    return pdu_type, body
