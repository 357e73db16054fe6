"""A real ``pypacs serve`` process on free ports, for the tests that talk to it over sockets."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    data: Path
    dicom_port: int
    http_port: int
    log_path: Path
    ae_title: str = "PYPACS"
    extra: list[str] = field(default_factory=list)
    dicom_tls_port: int = 0  # [server] dicom_tls_port, when on

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data / 'index.sqlite'}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_pypacs(
    data: Path, *args: str, timeout: float = 30.0, preexec: Callable[[], None] | None = None
) -> RunningServer:
    """Start ``pypacs serve`` on free ports and wait for its 'listening' line.

    ``preexec`` runs in the child before ``exec`` (e.g. to set resource limits). One
    process unless ``args`` name ``--workers``: tests that read the server's memory,
    descriptors or caps read that process.
    """
    data.mkdir(parents=True, exist_ok=True)
    if "--workers" not in args:
        args = (*args, "--workers", "1")
    log_path = data.parent / f"{data.name}-server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pypacs",
                "serve",
                "--data",
                str(data),
                "--dicom-port",
                "0",
                "--http-port",
                "0",
                # A small space reserve: hundreds of test servers each keep one.
                "--reserve-bytes",
                "65536",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=preexec,
        )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if line.startswith(b"listening") or not line:
            break
    selector.close()
    if not line.startswith(b"listening"):
        proc.kill()
        raise RuntimeError(f"pypacs did not start: {log_path.read_text(errors='replace')[-3000:]}")
    fields = dict(part.split("=", 1) for part in line.decode().split()[1:])
    return RunningServer(
        proc,
        data,
        int(fields["dicom"].rsplit(":", 1)[1]),
        int(fields["http"].rsplit(":", 1)[1]),
        log_path,
        extra=list(args),
        dicom_tls_port=int(fields["dicom_tls"].rsplit(":", 1)[1]) if "dicom_tls" in fields else 0,
    )
