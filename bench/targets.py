"""The archives a benchmark runs side by side: pypacs, Orthanc and DCMTK's dcmqrscp.

Each target is started fresh in an empty work folder of its own (``start(workdir)``), listens
on 127.0.0.1 only, on free ports, and is stopped with SIGTERM (``stop()``). Between the two,
a benchmark reads ``stored_count()``, ``index_size_bytes()`` and ``peak_rss_mib()``; the last
reads VmHWM from /proc, so it must be called before ``stop()``.

Every DCMTK program and Orthanc runs with ``TCP_NODELAY=1`` in its environment: without it
they leave Nagle's algorithm on and a C-STORE round trip on loopback costs ~45 ms.

``peers`` (AE title, port on 127.0.0.1) are the AEs a target may send to (C-MOVE
destinations); ingest needs none.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

HOST = "127.0.0.1"
# Where every benchmark keeps its generated corpora and writes its results by default.
DEFAULT_DATA = Path(tempfile.gettempdir()) / "pypacs-bench-data"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "pypacs-bench-results"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MIB = 1024 * 1024
BENCH_AE = "BENCHSCU"  # the calling AE title of the bench's own clients


class BenchError(RuntimeError):
    """Something the benchmark cannot go on without (a binary, a target that won't start)."""


@dataclass(frozen=True)
class Peer:
    """An AE a target may open associations to (a C-MOVE destination)."""

    ae_title: str
    port: int
    host: str = HOST
    tls: bool = False  # reached over TLS (bench/tls.py's destinations)


def require_binary(name: str, package: str = "dcmtk") -> str:
    """The full path of a program on PATH (or in /usr/sbin), or a BenchError saying how to
    install it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BenchError(f"{name} not found; install it: apt-get install -y {package}")
    return found


def require_pypacs() -> None:
    if importlib.util.find_spec("pypacs") is None:
        raise BenchError(
            f"pypacs is not importable from {sys.executable}; run the benchmark with the "
            "project's venv (make install; .venv/bin/python bench/...)"
        )


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def nodelay_env() -> dict[str, str]:
    """The environment for DCMTK programs and Orthanc: Nagle's algorithm off."""
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``check`` until it is true; fail if ``proc`` exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready after {START_TIMEOUT:.0f} s")
        time.sleep(0.05)


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def http_ok(url: str) -> bool:
    try:
        http_json(url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return True


def echo(ae_title: str, port: int) -> bool:
    """A C-ECHO with DCMTK's echoscu succeeds."""
    result = subprocess.run(
        [require_binary("echoscu"), "-aet", BENCH_AE, "-aec", ae_title, HOST, str(port)],
        env=nodelay_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=30,
    )
    return result.returncode == 0


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def process_tree(pid: int) -> Iterator[int]:
    pending = [pid]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(_children(current))


class PeakRss:
    """The largest VmHWM of a process and of every descendant seen while it runs (dcmqrscp
    serves each association in a forked child): sampled every 0.1 s by a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"peak-rss-{pid}", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for pid in process_tree(self.pid):
            self._peak_kib = max(self._peak_kib, status_kib(pid, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def mib(self) -> float:
        self._sample()
        return self._peak_kib / 1024

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _file_bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


class Target(ABC):
    """One archive under test. Use ``with target.running(workdir):`` or start()/stop()."""

    name: ClassVar[str]
    default_ae: ClassVar[str]

    def __init__(self, ae_title: str | None = None, peers: Sequence[Peer] = ()) -> None:
        self.ae_title = ae_title or self.default_ae
        self.peers = tuple(peers)
        self.dicom_port = 0
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._rss: PeakRss | None = None
        self._log: Any = None

    # -- what each target defines

    @abstractmethod
    def _launch(self, workdir: Path) -> subprocess.Popen[bytes]:
        """Write the configuration into ``workdir``, start the process, set ``dicom_port``."""

    @abstractmethod
    def _ready(self) -> bool:
        """The target answers (polled until true; start() then waits for a C-ECHO too)."""

    @abstractmethod
    def stored_count(self) -> int:
        """Instances the target holds now."""

    @abstractmethod
    def index_size_bytes(self) -> int:
        """Bytes of the target's index (database) files now, SQLite's -wal file included
        (may be called after stop(): the files stay)."""

    # -- shared

    def _echo(self) -> bool:
        """A C-ECHO to the target succeeds (a TLS target's own is over TLS)."""
        return echo(self.ae_title, self.dicom_port)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BenchError(f"{self.name} is not running")
        return self._proc

    def _open_log(self, workdir: Path) -> Any:
        self._log = (workdir / f"{self.name}.log").open("wb")
        return self._log

    def start(self, workdir: Path) -> None:
        """Start the target in ``workdir`` (created; must be empty) and wait until it serves."""
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            raise BenchError(f"{workdir} is not empty")
        self.workdir = workdir
        self._proc = self._launch(workdir)
        self._rss = PeakRss(self._proc.pid)
        try:
            wait_until(self._ready, self.name, self._proc)
            # A whole association, never a bare connect: dcmqrscp and Orthanc let one
            # half-open connection delay every association after it.
            wait_until(self._echo, f"{self.name} C-ECHO", self._proc)
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        """What the target wrote to its log file so far ("" before the first start)."""
        if self.workdir is None:
            return ""
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def peak_rss_mib(self) -> float:
        """Peak resident memory (VmHWM) so far; call it before stop()."""
        return self._rss.mib() if self._rss else 0.0

    def stop(self) -> None:
        """SIGTERM the target's process group, SIGKILL it if it lingers."""
        if self._rss is not None:
            self._rss.close()
            self._rss = None
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # forked children (dcmqrscp) left in the group we created
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    @contextlib.contextmanager
    def running(self, workdir: Path) -> Iterator[Self]:
        self.start(workdir)
        try:
            yield self
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class PypacsTarget(Target):
    """``python -m pypacs serve`` from the interpreter running the benchmark."""

    name = "pypacs"
    default_ae = "PYPACS"
    LISTENING = re.compile(rb"listening dicom=[\d.]+:(\d+) http=[\d.]+:(\d+)")

    def __init__(self, ae_title: str | None = None, peers: Sequence[Peer] = ()) -> None:
        super().__init__(ae_title, peers)
        self.http_port = 0
        self._ports = threading.Event()

    def _config(self, workdir: Path) -> Path:
        """A TOML file with the peers as [remotes]; everything else stays at its default."""
        lines = ["# written by bench/targets.py"]
        for number, peer in enumerate(self.peers):
            lines += [
                f"[remotes.peer{number}]",
                f'ae_title = "{peer.ae_title}"',
                f'host = "{peer.host}"',
                f"port = {peer.port}",
                *(["tls = true"] if peer.tls else []),
            ]
        # A run's variant of the configuration (say, access closed to all but the bench's
        # own AE title, and an audit file): TOML appended as it is.
        extra = os.environ.get("PYPACS_BENCH_TOML", "")
        path = workdir / "pypacs.toml"
        path.write_text("\n".join(lines) + "\n" + (extra + "\n" if extra else ""))
        return path

    def _launch(self, workdir: Path) -> subprocess.Popen[bytes]:
        require_pypacs()
        self._ports.clear()
        env = {k: v for k, v in nodelay_env().items() if k != "PYPACS_CONFIG"}
        command = [
            sys.executable,
            "-m",
            "pypacs",
            "serve",
            "--config",
            str(self._config(workdir)),
            "--data",
            str(workdir / "data"),
            "--ae-title",
            self.ae_title,
            "--dicom-port",
            "0",
            "--http-port",
            "0",
            # Flags for one run's variant (say, --audit-path audit.log), split as a shell would.
            *shlex.split(os.environ.get("PYPACS_BENCH_FLAGS", "")),
        ]
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._open_log(workdir),
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, args=(proc,), daemon=True).start()
        return proc

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        """Take the ports from the ``listening`` line, then keep draining stdout."""
        assert proc.stdout is not None
        for line in proc.stdout:
            match = self.LISTENING.search(line)
            if match and not self._ports.is_set():
                self.dicom_port, self.http_port = int(match.group(1)), int(match.group(2))
                self._ports.set()

    def _health(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"http://{HOST}:{self.http_port}/api/health")
        return result

    def _ready(self) -> bool:
        return self._ports.is_set() and http_ok(f"http://{HOST}:{self.http_port}/api/health")

    def stored_count(self) -> int:
        return int(self._health()["instances"])

    def index_size_bytes(self) -> int:
        assert self.workdir is not None
        index = self.workdir / "data" / "index.sqlite"
        return _file_bytes([index, index.with_name("index.sqlite-wal")])


class OrthancTarget(Target):
    """Orthanc with a JSON configuration of its own; other settings at their defaults (it
    fsyncs every stored file, as a user would have it)."""

    name = "orthanc"
    default_ae = "ORTHANC"

    def __init__(
        self,
        ae_title: str | None = None,
        peers: Sequence[Peer] = (),
        plugins: Sequence[str] = (),
    ) -> None:
        super().__init__(ae_title, peers)
        self.http_port = 0
        self.plugins = tuple(plugins)

    def _config(self, workdir: Path) -> Path:
        self.dicom_port, self.http_port = free_port(), free_port()
        config: dict[str, Any] = {
            "Name": "pypacs-bench",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": list(self.plugins),
            "DicomModalities": {
                peer.ae_title: [peer.ae_title, peer.host, peer.port] for peer in self.peers
            },
        }
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def _launch(self, workdir: Path) -> subprocess.Popen[bytes]:
        binary = require_binary("Orthanc", "orthanc")
        config = self._config(workdir)
        log = self._open_log(workdir)
        return subprocess.Popen(
            [binary, str(config)],
            cwd=workdir,
            env=nodelay_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def _ready(self) -> bool:
        return http_ok(f"http://{HOST}:{self.http_port}/system")

    def stored_count(self) -> int:
        return int(http_json(f"http://{HOST}:{self.http_port}/statistics")["CountInstances"])

    def index_size_bytes(self) -> int:
        assert self.workdir is not None
        index = self.workdir / "index"
        return _file_bytes([p for p in index.iterdir() if not p.name.endswith("-shm")])


class DcmqrscpTarget(Target):
    """DCMTK's dcmqrscp, forking a child per association (its default), one AE title mapped
    to one storage area."""

    name = "dcmqrscp"
    default_ae = "DCMQRSCP"
    MAX_STUDIES = 500  # dcmqrscp's own upper bound; it deletes the oldest study past it

    def __init__(
        self,
        ae_title: str | None = None,
        peers: Sequence[Peer] = (),
        max_studies: int = MAX_STUDIES,
    ) -> None:
        """``max_studies`` is the AETable quota as written; dcmqrscp itself lowers a quota
        above MAX_STUDIES to MAX_STUDIES (and says so in its log)."""
        super().__init__(ae_title, peers)
        self.max_studies = max_studies

    @property
    def storage(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "db" / self.ae_title

    def _config(self, workdir: Path) -> Path:
        self.dicom_port = free_port()
        self.storage.mkdir(parents=True)
        # dcmqrscp.cfg(5): HostTable entries take a host name, never an IP address.
        hosts = [
            f"peer{n} = ({p.ae_title}, {'localhost' if p.host == HOST else p.host}, {p.port})"
            for n, p in enumerate(self.peers)
        ]
        lines = [
            f"NetworkTCPPort = {self.dicom_port}",
            "MaxPDUSize = 16384",
            "MaxAssociations = 16",
            "HostTable BEGIN",
            *hosts,
            "HostTable END",
            "VendorTable BEGIN",
            "VendorTable END",
            "AETable BEGIN",
            f"{self.ae_title} {self.storage} RW ({self.max_studies}, 1024mb) ANY",
            "AETable END",
        ]
        path = workdir / "dcmqrscp.cfg"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _launch(self, workdir: Path) -> subprocess.Popen[bytes]:
        binary = require_binary("dcmqrscp")
        require_binary("echoscu")
        config = self._config(workdir)
        log = self._open_log(workdir)
        return subprocess.Popen(
            [binary, "-c", str(config)],
            cwd=workdir,
            env=nodelay_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def _ready(self) -> bool:
        return True  # start() waits for a C-ECHO

    def stored_count(self) -> int:
        return sum(1 for p in self.storage.iterdir() if p.is_file() and p.name != "index.dat")

    def index_size_bytes(self) -> int:
        return _file_bytes([self.storage / "index.dat"])


TARGETS: dict[str, type[Target]] = {
    cls.name: cls for cls in (PypacsTarget, OrthancTarget, DcmqrscpTarget)
}


def make_target(name: str, peers: Sequence[Peer] = ()) -> Target:
    """A target by name, with its default AE title."""
    try:
        cls = TARGETS[name]
    except KeyError:
        raise BenchError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}") from None
    return cls(peers=peers)


def _first_line(command: Sequence[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def tool_versions(names: Sequence[str], client: str) -> dict[str, str]:
    """The versions of the client program and of each target, for the results file."""
    from importlib import metadata

    found = {client: _first_line([require_binary(client), "--version"])}
    if "pypacs" in names:
        found["pypacs"] = metadata.version("pypacs")
    if "orthanc" in names:
        found["orthanc"] = _first_line([require_binary("Orthanc", "orthanc"), "--version"])
    if "dcmqrscp" in names:
        found["dcmqrscp"] = _first_line([require_binary("dcmqrscp"), "--version"])
    return found


def log(text: str) -> None:
    """Progress for the person running a benchmark (stderr; the results go to stdout)."""
    print(text, file=sys.stderr, flush=True)
