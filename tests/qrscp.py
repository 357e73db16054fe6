"""DCMTK peers for the retrieve tests: dcmqrscp as the archive we retrieve from, storescp as
a third-party move destination; each on a free port, ready once it answers a C-ECHO."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers import wait_for

NODELAY = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK: no 40 ms Nagle stalls on loopback
QR_AE = "DCMQR"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_echo(port: int, ae_title: str) -> bool:
    echo = subprocess.run(
        ["echoscu", "-aec", ae_title, "127.0.0.1", str(port)],
        capture_output=True,
        env=NODELAY,
        timeout=30,
    )
    return echo.returncode == 0


@dataclass(frozen=True)
class Qrscp:
    port: int
    storage: Path

    @property
    def remote(self) -> str:
        return f"127.0.0.1:{self.port}:{QR_AE}"

    def store(self, files: Sequence[Path]) -> None:
        storescu(self.port, QR_AE, files)


def storescu(port: int, ae_title: str, files: Sequence[Path]) -> None:
    """DCMTK's storescu sends the files, proposing exactly their SOP classes (-R)."""
    subprocess.run(
        ["storescu", "-R", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        capture_output=True,
        env=NODELAY,
        timeout=120,
    )


def _started(command: list[str], port: int, ae_title: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        command, env=NODELAY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: answers_echo(port, ae_title), timeout=20, what=f"{command[0]} ready")
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc


def _stopped(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@contextmanager
def dcmqrscp(folder: Path, hosts: Mapping[str, int] | None = None) -> Iterator[Qrscp]:
    """DCMTK's dcmqrscp as AE ``DCMQR``; ``hosts`` (AE title -> port on 127.0.0.1) are the
    move destinations it knows (its HostTable)."""
    port = free_port()
    storage = folder / "qr"
    storage.mkdir(parents=True)
    table = "".join(
        f"dest{i} = ({ae}, 127.0.0.1, {p})\n" for i, (ae, p) in enumerate((hosts or {}).items())
    )
    config = folder / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 8\n"
        f"HostTable BEGIN\n{table}HostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{QR_AE} {storage} RW (100, 1024mb) ANY\nAETable END\n"
    )
    proc = _started(["dcmqrscp", "-c", str(config), str(port)], port, QR_AE)
    try:
        yield Qrscp(port, storage)
    finally:
        _stopped(proc)


@contextmanager
def storescp(folder: Path, ae_title: str = "STORESCP") -> Iterator[int]:
    """DCMTK's storescp writing what it receives into ``folder`` bit for bit (+B); its port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = ["storescp", "-aet", ae_title, "+B", "-od", str(folder), str(port)]
    proc = _started(command, port, ae_title)
    try:
        yield port
    finally:
        _stopped(proc)
