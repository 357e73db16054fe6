"""The listener: real sockets on 127.0.0.1, DCMTK's echoscu and pynetdicom as requestors,
against a C-ECHO service of a few lines on the acceptor's interface."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE

from pypacs.net import dimse, pdu
from pypacs.net.acceptor import Acceptor, Limits, Offer, negotiate
from pypacs.net.association import Association, Decision, Identity, Timeouts

VERIFICATION = "1.2.840.10008.1.1"
IVRLE = "1.2.840.10008.1.2"
TIMEOUTS = Timeouts(artim=1.0, pdu_read=0.5, dimse_idle=5.0)
OFFERS = {VERIFICATION: Offer(frozenset({IVRLE, "1.2.840.10008.1.2.1"}))}


def echo_service(assoc: Association) -> None:
    """C-ECHO SCP: answer each C-ECHO-RQ with success until the peer releases."""
    while (message := assoc.receive()) is not None:
        assert message.command.message_id is not None
        assoc.send_message(message.context_id, dimse.echo_rsp(message.command.message_id))


def decide(rq: pdu.AssociateRQ, peer: tuple[str, int]) -> Decision:
    return negotiate(rq, OFFERS)


DEFAULT_LIMITS = Limits()


def make_acceptor(limits: Limits = DEFAULT_LIMITS, timeouts: Timeouts = TIMEOUTS) -> Acceptor:
    acceptor = Acceptor(
        "127.0.0.1",
        0,
        decide=decide,
        on_association=echo_service,
        identity=Identity(65536, "1.2.3.4"),
        timeouts=timeouts,
        limits=limits,
    )
    acceptor.start()
    return acceptor


@pytest.fixture
def acceptor() -> Iterator[Acceptor]:
    server = make_acceptor()
    yield server
    server.stop()


def wait_for(predicate: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def pynetdicom_echo(port: int) -> int | None:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="PYPACS")
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def rq_bytes(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "called_ae": "PYPACS",
        "calling_ae": "RAW",
        "contexts": (pdu.PresentationContextRQ(1, VERIFICATION, (IVRLE,)),),
        "user": pdu.UserInformation(max_length=16384, implementation_class_uid="1.2.3"),
    }
    fields.update(changes)
    return pdu.encode(pdu.AssociateRQ(**fields))  # type: ignore[arg-type]


def raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 6:
        got = sock.recv(6 - len(header))
        if not got:
            return 0, b""
        header += got
    pdu_type, length = struct.unpack(">BxI", header)
    body = b""
    while len(body) < length:
        got = sock.recv(length - len(body))
        assert got
        body += got
    return pdu_type, body


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="DCMTK not installed")
def test_echoscu_associates_echoes_and_releases(acceptor: Acceptor) -> None:
    port = acceptor.address[1]
    run = subprocess.run(
        ["echoscu", "-aec", "PYPACS", "127.0.0.1", str(port)], capture_output=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert wait_for(lambda: acceptor.established == 0)


def test_pynetdicom_associates_echoes_and_releases(acceptor: Acceptor) -> None:
    assert pynetdicom_echo(acceptor.address[1]) == 0x0000
    assert pynetdicom_echo(acceptor.address[1]) == 0x0000
    assert wait_for(lambda: acceptor.established == 0)


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="DCMTK not installed")
def test_silent_connections_keep_no_one_out_and_are_closed_after_artim() -> None:
    server = make_acceptor(Limits(max_negotiating=16, max_negotiating_per_address=8))
    try:
        before = open_fds()
        silent = [raw(server.address[1]) for _ in range(100)]
        run = subprocess.run(
            ["echoscu", "-aec", "PYPACS", "127.0.0.1", str(server.address[1])],
            capture_output=True,
            timeout=30,
        )
        assert run.returncode == 0, run.stderr
        # Every silent socket is closed by the server: evicted, or after ARTIM.
        for sock in silent:
            sock.settimeout(10)
            assert sock.recv(1) == b""
            sock.close()
        assert wait_for(lambda: server.negotiating == 0)
        assert wait_for(lambda: open_fds() <= before)
    finally:
        server.stop()


def test_over_max_associations_the_rejection_is_transient_local_limit() -> None:
    # The holder must stay established while the second peer asks, however slow the machine.
    patient = Timeouts(artim=10.0, pdu_read=10.0, dimse_idle=120.0)
    server = make_acceptor(Limits(max_associations=1), patient)
    try:
        holder = raw(server.address[1])
        holder.sendall(rq_bytes())
        assert read_pdu(holder)[0] == pdu.ASSOCIATE_AC
        assert wait_for(lambda: server.established == 1)
        ae = AE(ae_title="SCU")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", server.address[1], ae_title="PYPACS")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive is not None
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (
            pdu.RJ_TRANSIENT,
            pdu.RJ_SOURCE_PRESENTATION,
            pdu.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED,
        )
        holder.sendall(pdu.encode(pdu.ReleaseRQ()))
        assert read_pdu(holder)[0] == pdu.RELEASE_RP
        holder.close()
        assert wait_for(lambda: server.established == 0)
        assert pynetdicom_echo(server.address[1]) == 0x0000
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"contexts": ()},
            (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON),
        ),
        (
            {"user": pdu.UserInformation(max_length=7)},
            (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON),
        ),
        (
            {"application_context": "1.2.3.4"},
            (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED),
        ),
        (
            {"protocol_version": 2},
            (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_ACSE, pdu.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED),
        ),
    ],
)
def test_requests_the_standard_refuses_get_its_reason(
    acceptor: Acceptor, changes: dict[str, object], expected: tuple[int, int, int]
) -> None:
    try:
        body = rq_bytes(**changes)
    except pdu.PduError:
        pytest.skip("the codec refuses to encode it")
    with raw(acceptor.address[1]) as sock:
        sock.sendall(body)
        pdu_type, answer = read_pdu(sock)
    assert pdu_type == pdu.ASSOCIATE_RJ
    assert tuple(answer[1:4]) == expected


def test_a_4_gib_length_is_refused_without_allocation(acceptor: Acceptor) -> None:
    before = rss_kib()
    with raw(acceptor.address[1]) as sock:
        sock.sendall(struct.pack(">BxI", pdu.ASSOCIATE_RQ, 0xFFFFFFFF))
        pdu_type, body = read_pdu(sock)
    assert pdu_type == pdu.ABORT
    assert body[2:4] == bytes([pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_INVALID_PARAMETER_VALUE])
    assert rss_kib() - before < 16 * 1024
    assert pynetdicom_echo(acceptor.address[1]) == 0x0000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack(">BxI", 0x09, 4) + bytes(4), pdu.ABORT_UNRECOGNIZED_PDU),
        (
            pdu.pdata_header(8) + pdu.pdv_header(1, True, True, 2) + b"\0\0",
            pdu.ABORT_UNEXPECTED_PDU,
        ),
        (struct.pack(">BxI", pdu.ASSOCIATE_RQ, 80) + bytes(80), None),
    ],
    ids=["unknown-type", "p-data-first", "lying-lengths"],
)
def test_malformed_pdus_end_in_abort_and_others_are_served(
    acceptor: Acceptor, data: bytes, reason: int | None
) -> None:
    with raw(acceptor.address[1]) as sock:
        sock.sendall(data)
        pdu_type, body = read_pdu(sock)
    assert pdu_type == pdu.ABORT
    assert body[2] == pdu.ABORT_SOURCE_PROVIDER
    if reason is not None:
        assert body[3] == reason
    assert pynetdicom_echo(acceptor.address[1]) == 0x0000


def test_a_half_sent_pdu_is_cut_after_the_read_timeout(acceptor: Acceptor) -> None:
    with raw(acceptor.address[1]) as sock:
        whole = rq_bytes()
        sock.sendall(whole[: len(whole) // 2])
        pdu_type, _ = read_pdu(sock)  # no more is ever sent
        assert pdu_type == pdu.ABORT
        assert sock.recv(1) == b""
    assert wait_for(lambda: acceptor.negotiating == 0)
