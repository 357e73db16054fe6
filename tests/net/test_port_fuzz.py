"""Fuzzing a running ``pypacs serve`` over real sockets: random bytes, and valid exchanges
(A-ASSOCIATE-RQ, C-ECHO, C-FIND, A-RELEASE-RQ) with bytes flipped, cut, inserted or
lengths changed, each on a fresh connection. Every connection ends with an answer PS3.8
allows (A-ASSOCIATE-RJ, A-ABORT, or the replies of what was valid) and a close within the
timers; afterwards the server still answers C-ECHO and C-FIND correctly, with its
descriptors back to idle and its memory within bounds (read from /proc).

``PYPACS_FUZZ_EXAMPLES`` sets the examples per campaign (default 200; ``make soak``: 2,000).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pypacs.net import dimse, pdu

from dicomgen import Spec, make_dataset, write
from helpers import SUCCESS, association, echo, status_of, store_files, wait_for
from rawpeer import (
    IMPLICIT_VR_LE,
    VERIFICATION,
    MiB,
    descriptor_targets,
    descriptors,
    echo_pdu,
    raw,
    read_to_close,
    rq_bytes,
    rss,
    settle,
    sockets,
)
from serving import RunningServer, start_pypacs

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2.1
FIND_CONTEXT = 3
ARTIM = 1
PDU_READ = 1
IDLE = 2
# Generous: the server acts on timers of one or two seconds.
CLOSED_WITHIN = 15.0
# Per campaign; ``make soak`` sets PYPACS_FUZZ_EXAMPLES=2000.
EXAMPLES = int(os.environ.get("PYPACS_FUZZ_EXAMPLES", "200"))
# What a server may send us (PS3.8 9.3): never an A-ASSOCIATE-RQ or an A-RELEASE-RQ here.
ANSWERS = {pdu.ASSOCIATE_AC, pdu.ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.RELEASE_RP, pdu.ABORT}
# Concurrent C-FINDs may leave the index's SQLite pool holding up to 5 connections of
# 2 descriptors each (the database and its log) where the idle server had one: 8 more.
INDEX_POOL_FDS = 8
SPEC = Spec("FUZZ1", "Fuzz^Patient", 1, 1, 1)


@pytest.fixture(scope="module")
def fuzz_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with short timers and room for every fuzzing connection (no eviction: the
    timers must close them), holding one instance."""
    folder = tmp_path_factory.mktemp("fuzz")
    srv = start_pypacs(
        folder / "data",
        "--artim-timeout",
        str(ARTIM),
        "--pdu-read-timeout",
        str(PDU_READ),
        "--dimse-idle-timeout",
        str(IDLE),
        "--max-negotiating",
        "64",
        "--max-negotiating-per-address",
        "64",
    )
    try:
        path = write(SPEC, folder)
        assert status_of(store_files(srv.dicom_port, [path])[path]) == SUCCESS
        yield srv
    finally:
        srv.kill()


def find_identifier() -> bytes:
    """A STUDY-level identifier for the stored patient, implicit VR little endian."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = SPEC.patient_id
    query.StudyInstanceUID = ""
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = True
    write_dataset(out, query)
    return out.getvalue()


def pdata(context_id: int, data: bytes, is_command: bool) -> bytes:
    return (
        pdu.pdata_header(len(data) + 6) + pdu.pdv_header(context_id, is_command, True, len(data))
    ) + data


VALID_RQ = rq_bytes(
    contexts=(
        pdu.PresentationContextRQ(1, VERIFICATION, (IMPLICIT_VR_LE,)),
        pdu.PresentationContextRQ(FIND_CONTEXT, STUDY_ROOT_FIND, (IMPLICIT_VR_LE,)),
    )
)
VALID_EXCHANGE = (
    VALID_RQ
    + echo_pdu(1)
    + pdata(FIND_CONTEXT, dimse.find_rq(2, STUDY_ROOT_FIND), True)
    + pdata(FIND_CONTEXT, find_identifier(), False)
    + pdu.encode(pdu.ReleaseRQ())
)
# Where the PDU headers are: mutating their lengths reaches the paths that matter most.
_HEADERS: list[int] = []
_pos = 0
while _pos < len(VALID_EXCHANGE):
    _HEADERS.append(_pos)
    _pos += 6 + struct.unpack_from(">I", VALID_EXCHANGE, _pos + 2)[0]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The valid exchange with a few bytes flipped, cut, inserted, or a length changed."""
    data = bytearray(VALID_EXCHANGE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length", "byte"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            header = draw(st.sampled_from(_HEADERS))
            if header + 6 <= len(data):
                length = draw(st.sampled_from([0, 1, 3, 4, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
                data[header + 2 : header + 6] = struct.pack(">I", length)
        if not data:
            break
    return bytes(data)


def exchange(port: int, data: bytes, *, half_close: bool) -> list[tuple[int, bytes]]:
    """Send ``data`` on a fresh connection (then end our side when ``half_close``); the PDUs
    answered, once the server has closed."""
    with raw(port) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already aborted and closed: what it sent is still read
        pdus, closed = read_to_close(sock, CLOSED_WITHIN)
    assert closed, f"still open after {CLOSED_WITHIN} s: {data[:64]!r}"
    return pdus


def assert_answers_allowed(pdus: list[tuple[int, bytes]]) -> None:
    for pdu_type, body in pdus:
        assert pdu_type in ANSWERS, pdus
        if pdu_type in (pdu.ASSOCIATE_RJ, pdu.ABORT, pdu.RELEASE_RP):
            assert len(body) == 4  # PS3.8 Tables 9-21, 9-25, 9-26
    if pdus and pdus[0][0] != pdu.ASSOCIATE_AC:
        assert len(pdus) == 1, pdus  # no association: one RJ or one A-ABORT, then the close
    if pdus and pdus[-1][0] == pdu.ABORT:
        assert pdus[-1][1][2] in (pdu.ABORT_SOURCE_USER, pdu.ABORT_SOURCE_PROVIDER)


def assert_serves(srv: RunningServer) -> None:
    """C-ECHO and a C-FIND answered right: one match, the stored study."""
    assert srv.proc.poll() is None
    assert echo(srv.dicom_port) == SUCCESS
    with association(srv.dicom_port, [(STUDY_ROOT_FIND, IMPLICIT_VR_LE)]) as assoc:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = SPEC.patient_id
        query.StudyInstanceUID = ""
        answers = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    assert status_of(answers[-1][0]) == SUCCESS
    studies = [i.StudyInstanceUID for s, i in answers[:-1] if i is not None]
    assert studies == [make_dataset(SPEC).StudyInstanceUID]


def baseline(srv: RunningServer) -> tuple[int, int, int]:
    """The server's sockets, descriptors and RSS once warmed up and idle."""
    assert_serves(srv)
    pid = srv.proc.pid
    settle(pid, 0, 0.5)
    return sockets(pid), descriptors(pid), rss(pid)


def assert_back_to(srv: RunningServer, idle: tuple[int, int, int]) -> None:
    """Every connection's socket closed, the other descriptors within what the index pool
    may keep, memory within bounds, and the server answering."""
    idle_sockets, idle_fds, idle_rss = idle
    pid = srv.proc.pid
    closed = wait_for(lambda: sockets(pid) <= idle_sockets, CLOSED_WITHIN, "the sockets closed")
    assert closed, "; ".join(descriptor_targets(pid))
    assert descriptors(pid) <= idle_fds + INDEX_POOL_FDS, "; ".join(descriptor_targets(pid))
    grown = rss(pid) - idle_rss
    assert grown < 30 * MiB, f"RSS grew {grown / MiB:.1f} MiB"
    assert_serves(srv)
    assert "Traceback" not in srv.log()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_random_bytes_end_in_an_answer_and_a_close(fuzz_pacs: RunningServer) -> None:
    idle = baseline(fuzz_pacs)

    @FUZZ
    @given(st.binary(max_size=4096))
    def campaign(data: bytes) -> None:
        assert_answers_allowed(exchange(fuzz_pacs.dicom_port, data, half_close=True))
        assert fuzz_pacs.proc.poll() is None

    campaign()
    assert_back_to(fuzz_pacs, idle)


def test_mutated_exchanges_end_in_an_answer_and_a_close(fuzz_pacs: RunningServer) -> None:
    idle = baseline(fuzz_pacs)

    @FUZZ
    @given(mutated())
    def campaign(data: bytes) -> None:
        assert_answers_allowed(exchange(fuzz_pacs.dicom_port, data, half_close=True))
        assert fuzz_pacs.proc.poll() is None

    campaign()
    assert_back_to(fuzz_pacs, idle)


def test_the_valid_exchange_is_answered_in_full(fuzz_pacs: RunningServer) -> None:
    """The unmutated exchange: AC, the C-ECHO response, one C-FIND match and its final
    response, A-RELEASE-RP (the campaign's reference point)."""
    pdus = exchange(fuzz_pacs.dicom_port, VALID_EXCHANGE, half_close=False)
    assert pdus[0][0] == pdu.ASSOCIATE_AC and pdus[-1][0] == pdu.RELEASE_RP
    commands = [
        dimse.decode_command(b"".join(bytes(p.data) for p in pdu.iter_pdvs(body) if p.is_command))
        for pdu_type, body in pdus[1:-1]
        if any(p.is_command for p in pdu.iter_pdvs(body))
    ]
    assert [(c.message_id_being_responded_to, c.status) for c in commands] == [
        (1, 0x0000),
        (2, 0xFF00),
        (2, 0x0000),
    ]


def test_mutated_exchanges_left_open_are_closed_by_the_timers(fuzz_pacs: RunningServer) -> None:
    """Forty mutated exchanges at once, our side never closed: the server ends each within
    ARTIM, the PDU read timeout or the idle timeout (a bounded wait, not a timing assert)."""
    idle = baseline(fuzz_pacs)
    inputs: list[bytes] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(mutated())
    def collect(data: bytes) -> None:
        inputs.append(data)

    collect()
    socks = [raw(fuzz_pacs.dicom_port) for _ in inputs]
    try:
        for sock, data in zip(socks, inputs, strict=True):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
        for sock in socks:
            pdus, closed = read_to_close(sock, CLOSED_WITHIN)
            assert closed
            assert_answers_allowed(pdus)
    finally:
        for sock in socks:
            sock.close()
    assert_back_to(fuzz_pacs, idle)


def test_a_command_uid_outside_ascii_is_aborted_not_echoed(fuzz_pacs: RunningServer) -> None:
    """A UID of the command set with bytes outside ASCII (PS3.5 6.2 UI) is no UID: A-ABORT
    invalid parameter value, where it used to fail while echoing it in the C-ECHO-RSP."""
    command = dimse.echo_rq(1).replace(b"1.2.840", b"1.2\xf9840")
    pdus = exchange(fuzz_pacs.dicom_port, VALID_RQ + pdata(1, command, True), half_close=False)
    assert [t for t, _ in pdus] == [pdu.ASSOCIATE_AC, pdu.ABORT]
    assert tuple(pdus[1][1][2:4]) == (pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_INVALID_PARAMETER_VALUE)
    assert "Traceback" not in fuzz_pacs.log()
