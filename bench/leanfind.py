"""A lean raw-socket DIMSE client: C-FIND over one association, and associate+C-ECHO+release.

The benchmark's C-FIND figures must be the server's, never the client's: ``findscu`` spends
milliseconds starting up and dumping, pynetdicom's SCU far more per response. This client
frames PDUs with pypacs' own codecs (net/pdu.py, net/dimse.py: plain functions over bytes,
the same for every server measured), sends one C-FIND-RQ per query over an established
association and reads responses until the final status, counting them; identifiers are
skipped, never decoded. Only the command sets are decoded (their status).

    python bench/leanfind.py PORT AE [--repeat 7] [--level STUDY] [-k Keyword=value ...]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pypacs.net import dimse, pdu

HOST = "127.0.0.1"
CALLING_AE = "BENCHSCU"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"  # PS3.5 A.1
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2.1
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # PS3.4 C.6.2.1
VERIFICATION = dimse.VERIFICATION_SOP_CLASS
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1255.9.99"  # under the project's test root
MAX_PDU = 16384  # what we accept; DCMTK's default, as findscu offers
CONTEXT_ID = 1
TIMEOUT = 120.0

# Status values of C-FIND (PS3.4 C.4.1.1.4, PS3.7 C.1): pending, and the success that ends.
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_PENDING_WARNING = 0xFF01
PENDING = (STATUS_PENDING, STATUS_PENDING_WARNING)


class LeanError(RuntimeError):
    """The peer rejected, aborted, or broke the protocol."""


def identifier(level: str, keys: Sequence[tuple[str, str]]) -> bytes:
    """A C-FIND identifier in implicit VR little endian (built once per query, not timed)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys:
        setattr(ds, keyword, value)
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = True
    write_dataset(out, ds)
    return out.getvalue()


@dataclass
class FindResult:
    """One C-FIND: responses counted, the final status, its wall time."""

    pending: int
    status: int
    seconds: float


class LeanAssociation:
    """One association with one presentation context, implicit VR little endian only."""

    def __init__(
        self,
        port: int,
        called_ae: str,
        abstract_syntax: str = STUDY_ROOT_FIND,
        host: str = HOST,
        calling_ae: str = CALLING_AE,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """With ``tls``, the TLS handshake comes first (PS3.15 B.9), on the same timed path."""
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=None)
            except BaseException:
                self.sock.close()
                raise
        self._buffer = bytearray(MAX_PDU + 6)
        self.peer_max_pdu = 0
        self._message_id = 0
        self.final: dimse.Command | None = None  # the last final response's command set
        try:
            self._associate(called_ae, calling_ae, abstract_syntax)
        except BaseException:
            self.sock.close()
            raise

    # -- PDUs

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise LeanError("the peer closed the connection")
            got += n

    def _read_pdu(self) -> tuple[int, memoryview]:
        """The next PDU's type and variable field (a view of a reused buffer)."""
        head = memoryview(self._buffer)[:6]
        self._recv_exact(head)
        pdu_type, length = pdu.read_header(head)
        if length > len(self._buffer):
            self._buffer = bytearray(length)  # only the A-ASSOCIATE-AC can be this large
        body = memoryview(self._buffer)[:length]
        self._recv_exact(body)
        return pdu_type, body

    def _associate(self, called_ae: str, calling_ae: str, abstract_syntax: str) -> None:
        rq = pdu.AssociateRQ(
            called_ae=called_ae,
            calling_ae=calling_ae,
            contexts=(pdu.PresentationContextRQ(CONTEXT_ID, abstract_syntax, (IMPLICIT_VR_LE,)),),
            user=pdu.UserInformation(
                max_length=MAX_PDU, implementation_class_uid=IMPLEMENTATION_UID
            ),
        )
        self.sock.sendall(pdu.encode(rq))
        pdu_type, body = self._read_pdu()
        answer = pdu.decode(pdu_type, bytes(body))
        if not isinstance(answer, pdu.AssociateAC):
            raise LeanError(f"association refused: {answer}")
        accepted = [c for c in answer.contexts if c.id == CONTEXT_ID]
        if not accepted or accepted[0].result != pdu.PC_ACCEPTANCE:
            raise LeanError(f"presentation context not accepted: {answer.contexts}")
        self.peer_max_pdu = answer.user.max_length or 0

    def _send(self, command: bytes, dataset: bytes | None) -> None:
        # Command and data set each in one PDV of its own PDU, as long as they fit.
        limit = self.peer_max_pdu - 6 if self.peer_max_pdu else 1 << 20
        for data, is_command in ((command, True), (dataset, False)):
            if data is None:
                continue
            if len(data) > limit:
                raise LeanError(f"{len(data)} bytes do not fit the peer's PDU ({limit})")
            self.sock.sendall(
                pdu.pdata_header(len(data) + 6)
                + pdu.pdv_header(CONTEXT_ID, is_command, True, len(data))
                + data
            )

    def _responses(self) -> tuple[int, int]:
        """Read responses until a final status: (pending responses, final status)."""
        command = bytearray()
        pending = 0
        while True:
            pdu_type, body = self._read_pdu()
            if pdu_type != pdu.P_DATA_TF:
                raise LeanError(f"PDU type {pdu_type:#04x} while waiting for responses")
            for pdv in pdu.iter_pdvs(body):
                if not pdv.is_command:
                    continue  # an identifier: counted through its command, never decoded
                command += pdv.data
                if not pdv.is_last:
                    continue
                decoded = dimse.decode_command(command)
                status = decoded.status
                command.clear()
                if status in PENDING:
                    pending += 1
                else:
                    self.final = decoded
                    return pending, -1 if status is None else status

    # -- services

    def find(self, query: bytes) -> FindResult:
        """One C-FIND-RQ with ``query`` (implicit VR LE identifier), timed to its final status."""
        self._message_id += 1
        command = dimse.find_rq(self._message_id, STUDY_ROOT_FIND)
        started = time.perf_counter()
        self._send(command, query)
        pending, status = self._responses()
        return FindResult(pending, status, time.perf_counter() - started)

    def move(self, query: bytes, destination: str) -> tuple[int, int]:
        """One C-MOVE-RQ (Study Root) of ``query`` to ``destination``: its final status and
        the completed sub-operations it reports (PS3.4 C.4.2.1.5)."""
        self._message_id += 1
        self._send(dimse.move_rq(self._message_id, STUDY_ROOT_MOVE, destination), query)
        _, status = self._responses()
        completed = self.final.completed if self.final is not None else None
        return status, -1 if completed is None else completed

    def echo(self) -> int:
        """One C-ECHO; its status."""
        self._message_id += 1
        self._send(dimse.echo_rq(self._message_id), None)
        return self._responses()[1]

    def release(self) -> None:
        """A-RELEASE-RQ, wait for the A-RELEASE-RP, close."""
        try:
            self.sock.sendall(pdu.encode(pdu.ReleaseRQ()))
            pdu_type, _ = self._read_pdu()
            if pdu_type != pdu.RELEASE_RP:
                raise LeanError(f"PDU type {pdu_type:#04x} instead of A-RELEASE-RP")
        finally:
            self.sock.close()


@dataclass
class Timings:
    """Repeated runs of one measure: seconds and responses each."""

    seconds: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    status: int = -1

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000 if self.seconds else 0.0


def time_find(
    port: int, called_ae: str, level: str, keys: Sequence[tuple[str, str]], repeat: int
) -> Timings:
    """One association; a warm-up query, then ``repeat`` timed ones (counted each)."""
    query = identifier(level, keys)
    found = Timings()
    assoc = LeanAssociation(port, called_ae)
    try:
        for run in range(repeat + 1):
            result = assoc.find(query)
            found.status = result.status
            if run:
                found.seconds.append(result.seconds)
                found.counts.append(result.pending)
    finally:
        assoc.release()
    return found


def time_echo(port: int, called_ae: str, repeat: int, tls: ssl.SSLContext | None = None) -> Timings:
    """Association set-up + C-ECHO + release, ``repeat`` times after one warm-up; with
    ``tls``, each over a new TLS connection (full handshake: the context keeps no session)."""
    found = Timings()
    for run in range(repeat + 1):
        started = time.perf_counter()
        assoc = LeanAssociation(port, called_ae, VERIFICATION, tls=tls)
        found.status = assoc.echo()
        assoc.release()
        if run:
            found.seconds.append(time.perf_counter() - started)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("ae", help="the called AE title")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--level", default="STUDY")
    parser.add_argument("-k", action="append", default=[], help="Keyword=value")
    args = parser.parse_args(argv)
    keys = [(k.partition("=")[0], k.partition("=")[2]) for k in args.k]
    echo = time_echo(args.port, args.ae, args.repeat)
    print(f"associate+echo+release: {echo.median_ms:.2f} ms (status {echo.status:#06x})")
    found = time_find(args.port, args.ae, args.level, keys, args.repeat)
    print(
        f"C-FIND: {found.median_ms:.2f} ms median, {found.counts[-1] if found.counts else 0} "
        f"responses, final status {found.status:#06x}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
