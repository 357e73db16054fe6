"""A raw-socket peer of the DICOM port: PDUs as bytes, replies read to the end, and what a
running server holds (descriptors, resident memory) read from /proc."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pypacs.net import dimse, pdu
from pypacs.net.association import Association, Timeouts, connect

from memory import status_kib

VERIFICATION = dimse.VERIFICATION_SOP_CLASS
IMPLICIT_VR_LE = "1.2.840.10008.1.2"  # PS3.5 A.1
CONTEXT_ID = 1
MiB = 1024 * 1024
# PS3.8 9.3.1: type, reserved, length of the variable field.
HEADER = struct.Struct(">BxI")
SUCCESS = 0x0000


def rq_bytes(**changes: object) -> bytes:
    """An A-ASSOCIATE-RQ for Verification, with ``changes`` to its fields."""
    fields: dict[str, object] = {
        "called_ae": "PYPACS",
        "calling_ae": "RAWPEER",
        "contexts": (pdu.PresentationContextRQ(CONTEXT_ID, VERIFICATION, (IMPLICIT_VR_LE,)),),
        "user": pdu.UserInformation(max_length=16384, implementation_class_uid="1.2.3"),
    }
    fields.update(changes)
    return pdu.encode(pdu.AssociateRQ(**fields))  # type: ignore[arg-type]


def with_length(data: bytes, length: int) -> bytes:
    """``data`` (a whole PDU) with its PDU-length field set to ``length``."""
    return data[:2] + struct.pack(">I", length) + data[6:]


def echo_pdu(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ in one P-DATA-TF PDU on context 1."""
    command = dimse.echo_rq(message_id)
    return (
        pdu.pdata_header(len(command) + 6)
        + pdu.pdv_header(CONTEXT_ID, True, True, len(command))
        + command
    )


def raw(port: int, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to the port."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_to_close(sock: socket.socket, seconds: float) -> tuple[list[tuple[int, bytes]], bool]:
    """The PDUs the server sends until it closes, and whether it closed within ``seconds``
    (False: still open at the deadline). A trailing cut-short PDU is dropped."""
    deadline = time.monotonic() + seconds
    data = b""
    closed = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            got = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not got:
            closed = True
            break
        data += got
    pdus: list[tuple[int, bytes]] = []
    pos = 0
    while len(data) - pos >= HEADER.size:
        pdu_type, length = HEADER.unpack_from(data, pos)
        body = data[pos + HEADER.size : pos + HEADER.size + length]
        if len(body) < length:
            break
        pdus.append((pdu_type, body))
        pos += HEADER.size + length
    return pdus, closed


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next PDU (type, variable field); (0, b"") when the server closed first."""
    header = b""
    while len(header) < HEADER.size:
        got = sock.recv(HEADER.size - len(header))
        if not got:
            return 0, b""
        header += got
    pdu_type, length = HEADER.unpack(header)
    body = b""
    while len(body) < length:
        got = sock.recv(min(length - len(body), 1 << 20))
        if not got:
            return 0, b""
        body += got
    return pdu_type, body


def command_status(body: bytes) -> int | None:
    """The Status of the command set carried whole by one P-DATA-TF body."""
    command = b"".join(bytes(p.data) for p in pdu.iter_pdvs(body) if p.is_command)
    return dimse.decode_command(command).status


def descriptors(pid: int) -> int:
    """Open descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_targets(pid: int) -> list[str]:
    """What each open descriptor of a process points at (for a failure's message)."""
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        with suppress(OSError):  # closed meanwhile
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
    return out


def sockets(pid: int) -> int:
    """Open sockets of a process (listening ones included)."""
    return sum(1 for target in descriptor_targets(pid) if "socket:" in target)


def rss(pid: int) -> int:
    """Resident set of a process now, bytes."""
    return status_kib(pid, "VmRSS") * 1024


def settle(pid: int, target: int, seconds: float) -> int:
    """Poll the process's descriptor count until it is at most ``target`` or ``seconds``
    passed; the last count read."""
    deadline = time.monotonic() + seconds
    count = descriptors(pid)
    while count > target and time.monotonic() < deadline:
        time.sleep(0.05)
        count = descriptors(pid)
    return count


@contextmanager
def requestor(
    port: int,
    *contexts: pdu.PresentationContextRQ,
    max_length: int = 16384,
    timeout: float = 30.0,
    calling_ae: str = "RAWPEER",
) -> Iterator[Association]:
    """An association of ours (net/association.connect), released on leaving."""
    rq = pdu.AssociateRQ(
        "PYPACS",
        calling_ae,
        contexts or (pdu.PresentationContextRQ(CONTEXT_ID, VERIFICATION, (IMPLICIT_VR_LE,)),),
        pdu.UserInformation(max_length=max_length, implementation_class_uid="1.2.3"),
    )
    assoc = connect("127.0.0.1", port, rq, Timeouts(timeout, timeout, timeout))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo_status(
    assoc: Association, message_id: int = 1, *, context_id: int = CONTEXT_ID
) -> int | None:
    """One C-ECHO over an association of ours; its status."""
    assoc.send_message(context_id, dimse.echo_rq(message_id))
    message = assoc.receive()
    assert message is not None
    return message.command.status
