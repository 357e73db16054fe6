"""The DICOM port's bounds, proven on a running ``pypacs serve``: malformed PDUs get
A-ASSOCIATE-RJ or A-ABORT with the reason PS3.8 gives and the next peer is served; caps and
timers keep a known peer in and close what a crowd leaves open; descriptors and memory stay
flat over thousands of associations and over a 1 GiB instance. Every bound is read from the
server's /proc (descriptors, VmRSS, VmHWM), never from a clock.

``PYPACS_SOAK_ASSOCIATIONS`` sets how many sequential associations the flatness test makes
(default 2,000, about 10 s; ``make soak`` runs 10,000).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage

from pypacs.net import dimse, pdata, pdu
from pypacs.net.association import Association

from dicomgen import Spec, make_dataset
from helpers import association, blob_files, echo, index_rows, status_of, tmp_files, wait_for
from memory import peak_rss, status_kib
from rawpeer import (
    CONTEXT_ID,
    IMPLICIT_VR_LE,
    VERIFICATION,
    MiB,
    descriptors,
    echo_pdu,
    echo_status,
    raw,
    read_pdu,
    read_to_close,
    requestor,
    rq_bytes,
    rss,
    settle,
    with_length,
)
from serving import RunningServer, start_pypacs

ARTIM = 2  # seconds: [server] artim_timeout of the servers here
PDU_READ = 1  # [server] pdu_read_timeout
MAX_ASSOCIATIONS = 4
MAX_INSTANCE = MiB  # [storage] max_instance_bytes of the shared server
# Generous: every wait below is for the server to act on a timer of a second or two.
CLOSED_WITHIN = 15.0
SUCCESS = "0x0000"
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, out of resources
GiB = 1024 * MiB
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2.1
ASSOCIATIONS = int(os.environ.get("PYPACS_SOAK_ASSOCIATIONS", "2000"))

FLAGS = (
    "--artim-timeout",
    str(ARTIM),
    "--pdu-read-timeout",
    str(PDU_READ),
    "--dimse-idle-timeout",
    "5",
    "--max-associations",
    str(MAX_ASSOCIATIONS),
)


@pytest.fixture(scope="module")
def port_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server with short timers and small caps, shared by the tests that leave it idle."""
    srv = start_pypacs(
        tmp_path_factory.mktemp("bounds") / "data",
        *FLAGS,
        "--max-instance-bytes",
        str(MAX_INSTANCE),
    )
    yield srv
    srv.kill()


def assert_serving(srv: RunningServer) -> None:
    assert srv.proc.poll() is None
    assert echo(srv.dicom_port) == SUCCESS


def idle_descriptors(srv: RunningServer) -> int:
    """The server's descriptor count once nothing is open (what pools keep is made by then:
    one echo first)."""
    assert echo(srv.dicom_port) == SUCCESS
    pid = srv.proc.pid
    wait_for(lambda: settle(pid, 0, 0.3) == settle(pid, 0, 0.3), what="a steady count")
    return descriptors(pid)


# -- malformed PDUs, each answered ---------------------------------------------------------

RQ = rq_bytes()
RELEASE = pdu.encode(pdu.ReleaseRQ())


def ae_field(rq: bytes, offset: int, field: bytes) -> bytes:
    """``rq`` with the 16-byte AE field at ``offset`` (of the variable field) replaced by
    ``field``, whatever its length, and the PDU-length made to match."""
    start = 6 + offset
    out = rq[:start] + field + rq[start + 16 :]
    return with_length(out, len(out) - 6)


def contexts_rq(count: int) -> bytes:
    """An A-ASSOCIATE-RQ of ``count`` presentation contexts (ids wrap past 255)."""
    body = RQ[6:]
    fixed, items = body[:68], body[68:]  # PS3.8 Table 9-11: 68 bytes before the items
    app_end = 4 + struct.unpack_from(">H", items, 2)[0]
    context_end = app_end + 4 + struct.unpack_from(">H", items, app_end + 2)[0]
    context = items[app_end:context_end]
    contexts = b"".join(
        context[:4] + bytes([(2 * i + 1) & 0xFF]) + context[5:] for i in range(count)
    )
    body = fixed + items[:app_end] + contexts + items[context_end:]
    return struct.pack(">BxI", pdu.ASSOCIATE_RQ, len(body)) + body


def abort(reason: int) -> tuple[int, int, int]:
    """An A-ABORT from the service provider with this reason (PS3.8 Table 9-26)."""
    return (pdu.ABORT, pdu.ABORT_SOURCE_PROVIDER, reason)


REFUSED = (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, pdu.RJ_USER_NO_REASON)

# (bytes sent, what answers: (PDU type, then source and reason of an A-ABORT or result,
# source and reason of an A-ASSOCIATE-RJ)), each on a fresh connection.
MALFORMED: dict[str, tuple[bytes, tuple[int, ...]]] = {
    # PS3.8 9.3.8 Table 9-26 reasons: 0 not specified, 1 unrecognized PDU, 2 unexpected
    # PDU, 4 unrecognized PDU parameter, 5 unexpected parameter, 6 invalid parameter value.
    "length-larger-than-the-data": (
        with_length(RQ, len(RQ) + 100),  # the rest never comes: cut after pdu_read_timeout
        abort(pdu.ABORT_NOT_SPECIFIED),
    ),
    "length-smaller-than-the-data": (
        with_length(RQ, len(RQ) - 6 - 30),
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "length-4-gib": (
        struct.pack(">BxI", pdu.ASSOCIATE_RQ, 0xFFFFFFFF),
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "p-data-length-4-gib-first": (
        struct.pack(">BxI", pdu.P_DATA_TF, 0xFFFFFFFF),
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "unknown-pdu-type": (
        struct.pack(">BxI", 0x09, 4) + bytes(4),
        abort(pdu.ABORT_UNRECOGNIZED_PDU),
    ),
    "pdu-type-0xff": (
        struct.pack(">BxI", 0xFF, 4) + bytes(4),
        abort(pdu.ABORT_UNRECOGNIZED_PDU),
    ),
    "unknown-item-type": (
        with_length(RQ + bytes([0x99, 0, 0, 4]) + bytes(4), len(RQ) - 6 + 8),
        abort(pdu.ABORT_UNRECOGNIZED_PARAMETER),
    ),
    "p-data-before-association": (echo_pdu(), abort(pdu.ABORT_UNEXPECTED_PDU)),
    "release-before-association": (RELEASE, abort(pdu.ABORT_UNEXPECTED_PDU)),
    "no-presentation-context": (
        rq_bytes(contexts=()),
        (pdu.ASSOCIATE_RJ, *REFUSED),
    ),
    "300-presentation-contexts": (
        contexts_rq(300),  # PS3.8 9.3.2.2: at most 128 (odd ids 1..255)
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "called-ae-empty": (
        ae_field(RQ, 4, b" " * 16),  # PS3.5 6.2: an AE of spaces only is not a value
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "calling-ae-empty": (
        ae_field(RQ, 20, b" " * 16),
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
    "called-ae-17-characters": (
        ae_field(RQ, 4, b"A" * 17),  # the field is 16 bytes: the rest shifts one byte
        abort(pdu.ABORT_UNRECOGNIZED_PARAMETER),
    ),
    "calling-ae-40-characters": (
        ae_field(RQ, 20, b"B" * 40),
        abort(pdu.ABORT_UNRECOGNIZED_PARAMETER),
    ),
    "calling-ae-with-a-control-character": (
        ae_field(RQ, 20, b"RAW\x01PEER".ljust(16)),
        abort(pdu.ABORT_INVALID_PARAMETER_VALUE),
    ),
}
for _length in (1, 4, 7):
    MALFORMED[f"max-pdu-length-{_length}"] = (
        rq_bytes(user=pdu.UserInformation(max_length=_length, implementation_class_uid="1.2.3")),
        (pdu.ASSOCIATE_RJ, *REFUSED),
    )


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_is_answered_and_the_next_peer_served(
    port_pacs: RunningServer, name: str
) -> None:
    data, expected = MALFORMED[name]
    with raw(port_pacs.dicom_port) as sock:
        sock.sendall(data)
        pdus, closed = read_to_close(sock, CLOSED_WITHIN)
    assert closed, "the server left the connection open"
    assert len(pdus) == 1, pdus
    pdu_type, body = pdus[0]
    assert len(body) == 4  # PS3.8 Tables 9-21 and 9-26
    if pdu_type == pdu.ABORT:
        assert (pdu_type, body[2], body[3]) == expected
    else:
        assert (pdu_type, body[1], body[2], body[3]) == expected
    assert_serving(port_pacs)


def test_a_peer_that_lies_about_the_length_then_closes_gets_the_close(
    port_pacs: RunningServer,
) -> None:
    """PS3.8 9.2.3 AA-5: the transport closed in Sta2: nothing is sent, nothing kept."""
    with raw(port_pacs.dicom_port) as sock:
        sock.sendall(with_length(RQ, 10_000))
        sock.shutdown(socket.SHUT_WR)
        pdus, closed = read_to_close(sock, CLOSED_WITHIN)
    assert closed and pdus == []
    assert_serving(port_pacs)


@pytest.mark.parametrize("max_length", [0, 2**32 - 1, 8192])
def test_a_peer_maximum_of_none_or_4_gib_is_accepted_and_served(
    port_pacs: RunningServer, max_length: int
) -> None:
    """PS3.8 D.1.1: a Maximum Length of 0 means no limit; 2**32-1 is a legal value."""
    user = pdu.UserInformation(max_length=max_length, implementation_class_uid="1.2.3")
    with raw(port_pacs.dicom_port) as sock:
        sock.sendall(rq_bytes(user=user))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == pdu.ASSOCIATE_AC
        ac = pdu.decode(pdu_type, body)
        assert isinstance(ac, pdu.AssociateAC)
        assert [(c.id, c.result) for c in ac.contexts] == [(CONTEXT_ID, pdu.PC_ACCEPTANCE)]
        sock.sendall(echo_pdu(7))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == pdu.P_DATA_TF
        command = b"".join(bytes(p.data) for p in pdu.iter_pdvs(body))
        answer = dimse.decode_command(command)
        assert (answer.message_id_being_responded_to, answer.status) == (7, 0)
        sock.sendall(RELEASE)
        assert read_pdu(sock)[0] == pdu.RELEASE_RP


def test_128_presentation_contexts_are_each_answered(port_pacs: RunningServer) -> None:
    contexts = tuple(
        pdu.PresentationContextRQ(2 * i + 1, VERIFICATION, (IMPLICIT_VR_LE,)) for i in range(128)
    )
    with raw(port_pacs.dicom_port) as sock:
        sock.sendall(rq_bytes(contexts=contexts))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == pdu.ASSOCIATE_AC
        ac = pdu.decode(pdu_type, body)
        assert isinstance(ac, pdu.AssociateAC)
        assert [c.id for c in ac.contexts] == [c.id for c in contexts]
        assert {c.result for c in ac.contexts} == {pdu.PC_ACCEPTANCE}
        sock.sendall(RELEASE)
        assert read_pdu(sock)[0] == pdu.RELEASE_RP
    assert_serving(port_pacs)


# -- many peers ----------------------------------------------------------------------------


def test_one_association_too_many_is_rejected_transient_local_limit(
    port_pacs: RunningServer,
) -> None:
    holders = [raw(port_pacs.dicom_port) for _ in range(MAX_ASSOCIATIONS)]
    try:
        for sock in holders:
            sock.sendall(RQ)
            assert read_pdu(sock)[0] == pdu.ASSOCIATE_AC
        with raw(port_pacs.dicom_port) as extra:
            extra.sendall(RQ)
            pdus, closed = read_to_close(extra, CLOSED_WITHIN)
        # PS3.8 9.3.4 Table 9-21: rejected-transient, service-provider (presentation
        # related function), local limit exceeded.
        assert closed and [(t, tuple(b[1:4])) for t, b in pdus] == [
            (
                pdu.ASSOCIATE_RJ,
                (
                    pdu.RJ_TRANSIENT,
                    pdu.RJ_SOURCE_PRESENTATION,
                    pdu.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED,
                ),
            )
        ]
        holders[0].sendall(RELEASE)
        assert read_pdu(holders[0])[0] == pdu.RELEASE_RP
        holders.pop(0).close()
        assert wait_for(lambda: echo(port_pacs.dicom_port) == SUCCESS, what="a free slot")
    finally:
        for sock in holders:
            sock.close()
    # The holders' associations end once their sockets close.
    assert wait_for(lambda: all(echo(port_pacs.dicom_port) == SUCCESS for _ in range(4)))


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="DCMTK's echoscu is not installed")
def test_a_crowd_of_silent_and_half_sent_connections_keeps_no_one_out(
    port_pacs: RunningServer,
) -> None:
    pid = port_pacs.proc.pid
    idle = idle_descriptors(port_pacs)
    silent = [raw(port_pacs.dicom_port) for _ in range(100)]
    half = [raw(port_pacs.dicom_port) for _ in range(50)]
    for sock in half:
        sock.sendall(RQ[: len(RQ) // 2])
    try:
        run = subprocess.run(
            ["echoscu", "-to", "10", "-aec", "PYPACS", "127.0.0.1", str(port_pacs.dicom_port)],
            capture_output=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        # Each crowd socket is closed by the server: evicted to make room for newer ones
        # (nothing sent), or after ARTIM (silent) or pdu_read_timeout (half sent: A-ABORT).
        for sock in silent + half:
            pdus, closed = read_to_close(sock, CLOSED_WITHIN)
            assert closed
            assert [t for t, _ in pdus] in ([], [pdu.ABORT])
    finally:
        for sock in silent + half:
            sock.close()
    assert settle(pid, idle, CLOSED_WITHIN) <= idle
    assert_serving(port_pacs)


def test_descriptors_and_memory_stay_flat_over_many_associations(
    port_pacs: RunningServer,
) -> None:
    pid = port_pacs.proc.pid
    for n in range(200):  # warm-up: imports, caches, the thread stack's pages
        with requestor(port_pacs.dicom_port) as assoc:
            assert echo_status(assoc, n + 1) == 0
    idle = idle_descriptors(port_pacs)
    before = rss(pid)
    for n in range(ASSOCIATIONS):
        with requestor(port_pacs.dicom_port) as assoc:
            assert echo_status(assoc, n + 1) == 0
    assert settle(pid, idle, CLOSED_WITHIN) == idle
    grown = rss(pid) - before
    assert grown < 20 * MiB, f"RSS grew {grown / MiB:.1f} MiB over {ASSOCIATIONS} associations"


# -- large instances ----------------------------------------------------------------------


def header_bytes(spec: Spec, rows: int, columns: int) -> bytes:
    """An instance's data set without its Pixel Data, implicit VR little endian."""
    ds: Dataset = make_dataset(spec)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = True
    write_dataset(out, ds)
    return out.getvalue()


def pixel_header(length: int) -> bytes:
    """Pixel Data (7FE0,0010), implicit VR: tag and a 4-byte length (PS3.5 7.1.3)."""
    return struct.pack("<HHI", 0x7FE0, 0x0010, length)


def stream_store(assoc: Association, sop_instance: str, head: bytes, zeros: int) -> int | None:
    """C-STORE of ``head`` then ``zeros`` zero bytes, sent in PDUs as large as the server
    takes from one reused buffer; the response's status."""
    room = (assoc.peer_max_pdu or MiB) - 6
    chunk = memoryview(bytes(room))
    assoc.send(pdata.fragment(CONTEXT_ID, dimse.store_rq(1, CTImageStorage, sop_instance), None, 0))

    def pdv(data: memoryview | bytes, last: bool) -> list[bytes | memoryview]:
        return [
            pdu.pdata_header(len(data) + 6),
            pdu.pdv_header(CONTEXT_ID, False, last, len(data)),
            data,
        ]

    assoc.send(pdv(head, zeros == 0), messages=0)
    left = zeros
    while left:
        piece = chunk[: min(room, left)]
        left -= len(piece)
        assoc.send(pdv(piece, left == 0), messages=0)
    message = assoc.receive()
    assert message is not None
    return message.command.status


def store_context() -> pdu.PresentationContextRQ:
    return pdu.PresentationContextRQ(CONTEXT_ID, CTImageStorage, (IMPLICIT_VR_LE,))


def test_an_instance_over_the_maximum_is_out_of_resources_and_leaves_no_file(
    port_pacs: RunningServer,
) -> None:
    spec = Spec("BIG2", "Big^Refused", 1, 1, 1)
    head = header_bytes(spec, 1024, 1024)
    sop_instance = str(make_dataset(spec).SOPInstanceUID)
    echo_context = pdu.PresentationContextRQ(3, VERIFICATION, (IMPLICIT_VR_LE,))
    with requestor(port_pacs.dicom_port, store_context(), echo_context) as assoc:
        status = stream_store(assoc, sop_instance, head + pixel_header(2 * MiB), 2 * MiB)
        assert echo_status(assoc, 2, context_id=3) == 0  # the association goes on
    assert status == OUT_OF_RESOURCES
    assert blob_files(port_pacs.data) == [] and tmp_files(port_pacs.data) == []
    assert index_rows(port_pacs.database_url, "instance") == []
    assert_serving(port_pacs)


@pytest.fixture
def big_pacs(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> Iterator[RunningServer]:
    free = shutil.disk_usage(tmp_path).free
    if free < 3 * GiB:
        pytest.skip(f"a 1 GiB instance needs 3 GiB free under {tmp_path}; {free >> 20} MiB are")
    yield server_factory(*FLAGS)


def test_a_1_gib_instance_is_stored_in_bounded_memory_found_and_deleted(
    big_pacs: RunningServer,
) -> None:
    pid = big_pacs.proc.pid
    spec = Spec("BIG1", "Big^Instance", 1, 1, 1)
    rows, columns = 16384, 32768  # 16-bit: 1 GiB of pixels
    head = header_bytes(spec, rows, columns) + pixel_header(GiB)
    ds = make_dataset(spec)
    assert echo(big_pacs.dicom_port) == SUCCESS
    idle = rss(pid)
    with requestor(big_pacs.dicom_port, store_context(), max_length=65536, timeout=120) as assoc:
        assert stream_store(assoc, str(ds.SOPInstanceUID), head, GiB) == 0
    peak = peak_rss(pid) - idle
    assert peak < 100 * MiB, f"the peak RSS rose {peak / MiB:.0f} MiB above idle"

    with association(big_pacs.dicom_port, [(STUDY_ROOT_FIND, IMPLICIT_VR_LE)]) as find:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = ds.StudyInstanceUID
        query.SeriesInstanceUID = ds.SeriesInstanceUID
        query.SOPInstanceUID = ds.SOPInstanceUID
        query.Rows = query.Columns = None
        answers = list(find.send_c_find(query, STUDY_ROOT_FIND))
    found = [ident for status, ident in answers if status_of(status) == "0xFF00"]
    assert status_of(answers[-1][0]) == SUCCESS
    assert [f.SOPInstanceUID for f in found if f is not None] == [ds.SOPInstanceUID]

    [row] = index_rows(big_pacs.database_url, "instance")
    [blob] = blob_files(big_pacs.data)
    assert row["blob_size"] == blob.stat().st_size >= len(head) + GiB

    url = (
        f"http://127.0.0.1:{big_pacs.http_port}/dicom-web/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    assert httpx.delete(url, timeout=60).status_code == 204
    assert blob_files(big_pacs.data) == []
    assert index_rows(big_pacs.database_url, "instance") == []
    assert status_kib(pid, "VmRSS") * 1024 - idle < 100 * MiB
