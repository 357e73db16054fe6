"""The benchmark's clients: DCMTK command-line programs, run with ``TCP_NODELAY=1``.

The client side must cost far less than the server under test (DCMTK's ``storescu`` sends
thousands of small instances a second into a sink), so the clients are DCMTK programs,
never pynetdicom's SCU.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from targets import BENCH_AE, HOST, nodelay_env, require_binary

STORESCU_TIMEOUT = 3600.0


RESPONSE = re.compile(r"^I: Received Store Response \((.*)\)\s*$")


@dataclass(frozen=True)
class SendResult:
    """What one or more parallel storescu processes did."""

    seconds: float  # wall time from the first start to the last exit
    exit_codes: tuple[int, ...]
    statuses: dict[str, int]  # C-STORE response statuses as storescu names them: count
    errors: int  # lines storescu logged at error level ("E: ...")
    first_error: str

    @property
    def succeeded(self) -> int:
        """Responses with a success or warning status: instances the target took."""
        return sum(n for s, n in self.statuses.items() if s.startswith(("Success", "Warning")))

    @property
    def refused(self) -> int:
        """Responses with a failure status."""
        return sum(self.statuses.values()) - self.succeeded

    @property
    def ok(self) -> bool:
        return not any(self.exit_codes) and not self.errors and not self.refused


def storescu_command(ae_title: str, port: int, folder: Path, tls: Sequence[str] = ()) -> list[str]:
    """storescu sending every file of ``folder`` on one association, going on after a failed
    store (so losses are counted, not hidden by a stop). ``-v`` because storescu logs a
    failure status only in verbose mode (a few lines an instance, into a file). ``tls``:
    DCMTK's TLS options (``+tls KEY CERT +cf CA``), none for plain TCP."""
    return [
        require_binary("storescu"),
        "-v",
        "-aet",
        BENCH_AE,
        "-aec",
        ae_title,
        "--no-halt",
        *tls,
        HOST,
        str(port),
        "+sd",
        str(folder),
    ]


def read_log(log: Path, statuses: Counter[str]) -> list[str]:
    """Tally the store responses of one storescu log into ``statuses``; its error lines."""
    errors: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        match = RESPONSE.match(line)
        if match:
            statuses[match.group(1)] += 1
        elif line.startswith("E:"):
            errors.append(line)
    return errors


def store(
    ae_title: str,
    port: int,
    folders: Sequence[Path],
    logdir: Path,
    tls: Sequence[str] = (),
) -> SendResult:
    """Send each folder with its own storescu, all at once (one association each), and wait
    for them all. Their output goes to ``logdir/storescu-N.log``."""
    logdir.mkdir(parents=True, exist_ok=True)
    logs = [logdir / f"storescu-{n}.log" for n in range(len(folders))]
    commands = [storescu_command(ae_title, port, folder, tls) for folder in folders]
    handles = [log.open("wb") for log in logs]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        procs += [
            subprocess.Popen(
                command,
                env=nodelay_env(),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            for command, handle in zip(commands, handles, strict=True)
        ]
        codes = tuple(proc.wait(STORESCU_TIMEOUT) for proc in procs)
        seconds = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for handle in handles:
            handle.close()
    statuses: Counter[str] = Counter()
    errors = [line for log in logs for line in read_log(log, statuses)]
    return SendResult(seconds, codes, dict(statuses), len(errors), errors[0] if errors else "")
