"""DICOM over TLS beside plain TCP: the same C-STORE, C-MOVE and C-ECHO with and without TLS.

    .venv/bin/python bench/tls.py [--ct 300] [--repeat 3] [--echo-repeat 21] [--rounds 1]
                                  [--targets pypacs,orthanc] [--out DIR] [--data DIR]

For each round, target and mode (plain, then TLS): start the target fresh (pypacs with its TLS
port beside the plain one, Orthanc with its DICOM port over TLS), with a DCMTK ``storescp
--ignore`` destination that is plain or ``+tls`` as the mode is; store one study of ``--ct``
512x512 CT instances with ``storescu`` (``+tls KEY CERT +cf CA`` over TLS), time ``--echo-repeat``
association set-ups + C-ECHO + releases with ``leanfind`` (a full handshake each), then
``--repeat`` C-MOVEs of the study to that destination with ``leanfind`` (DCMTK's movescu has
no TLS options). Before the targets, ``storescu`` sends the study straight to the
``storescp`` destination, plain and over TLS: the DCMTK peers' own ceiling. Certificates (one CA,
the target's, the clients') are made into the run's work folder with tests/certs.py's
generator. Prints per target the plain and TLS figures and TLS's speed over plain's, and
writes everything as JSON into ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import leanfind
from clients import store
from data import Corpus, Layout, generate
from retrieve import DEST_AE, Timing, study_uid
from targets import (
    BENCH_AE,
    DEFAULT_DATA,
    DEFAULT_OUT,
    HOST,
    BenchError,
    OrthancTarget,
    Peer,
    PypacsTarget,
    Target,
    free_port,
    log,
    nodelay_env,
    require_binary,
    require_pypacs,
    tool_versions,
)

MODES = ("plain", "tls")
TARGET_NAMES = ("pypacs", "orthanc")
CERTS_MODULE = Path(__file__).resolve().parents[1] / "tests" / "certs.py"


def _certs_module() -> ModuleType:
    """tests/certs.py, the TLS tests' certificate generator, loaded by path (tests is not a
    package; the bench shares the generator rather than keeping a copy)."""
    name = "pypacs_bench_certs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CERTS_MODULE)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load the certificate generator {CERTS_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules[name]
        raise BenchError(f"{CERTS_MODULE}: {exc}; run the bench with the project's venv") from exc
    return module


@dataclass(frozen=True)
class Files:
    """The PEM files of one run: the CA, the targets' pair, the clients' (and sink's) pair."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> Files:
        made = _certs_module().make_certificates(folder)
        return cls(
            made.ca, made.server.certificate, made.server.key, made.client.certificate,
            made.client.key,
        )  # fmt: skip

    def dcmtk(self) -> list[str]:
        """DCMTK's TLS options for the clients and the sink: our key and certificate, the CA
        the peer's is checked against (DCMTK 3.6.7's default profile is BCP 195's
        non-downgrading one, +py)."""
        return ["+tls", str(self.client_key), str(self.client_cert), "+cf", str(self.ca)]

    def context(self) -> ssl.SSLContext:
        """leanfind's client context: the same client certificate and CA; names unchecked, as
        DICOM peers are addressed by IP and trusted through the CA (PS3.15 B.9)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.load_cert_chain(self.client_cert, self.client_key)
        context.load_verify_locations(cafile=self.ca)
        return context


class TlsPypacsTarget(PypacsTarget):
    """pypacs with ``[server] dicom_tls_port`` and ``[tls]`` beside its plain port."""

    def __init__(self, files: Files, peers: Sequence[Peer] = ()) -> None:
        super().__init__(peers=peers)
        self.files = files
        self.tls_port = 0

    def _config(self, workdir: Path) -> Path:
        path = super()._config(workdir)
        self.tls_port = free_port()
        path.write_text(
            path.read_text()
            + "\n".join(
                [
                    "[server]",
                    f"dicom_tls_port = {self.tls_port}",
                    "[tls]",
                    f'certificate = "{self.files.server_cert}"',
                    f'private_key = "{self.files.server_key}"',
                    f'ca = "{self.files.ca}"',
                ]
            )
            + "\n"
        )
        return path


class TlsOrthancTarget(OrthancTarget):
    """Orthanc (1.9 and later) with its DICOM port over TLS, peers' certificates required,
    and its destinations reached over TLS (``UseDicomTls``)."""

    def __init__(self, files: Files, peers: Sequence[Peer] = ()) -> None:
        super().__init__(peers=peers)
        self.files = files

    @property
    def tls_port(self) -> int:
        return self.dicom_port

    def _config(self, workdir: Path) -> Path:
        path = super()._config(workdir)
        config = json.loads(path.read_text())
        config |= {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.files.server_cert),
            "DicomTlsPrivateKey": str(self.files.server_key),
            "DicomTlsTrustedCertificates": str(self.files.ca),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                p.ae_title: {
                    "AET": p.ae_title,
                    "Host": p.host,
                    "Port": p.port,
                    "UseDicomTls": p.tls,
                }
                for p in self.peers
            },
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def _echo(self) -> bool:
        return tls_echo(self.ae_title, self.dicom_port, self.files)


def tls_echo(ae_title: str, port: int, files: Files) -> bool:
    """A C-ECHO over TLS with DCMTK's echoscu succeeds."""
    command = [require_binary("echoscu"), "-aet", BENCH_AE, "-aec", ae_title, *files.dcmtk()]
    done = subprocess.run(
        [*command, HOST, str(port)],
        capture_output=True,
        env=nodelay_env(),
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def make(name: str, mode: str, files: Files, dest_port: int) -> Target:
    """A fresh target for one mode; the move destination is TLS when the mode is."""
    peers = [Peer(DEST_AE, dest_port, tls=mode == "tls"), Peer(BENCH_AE, free_port())]
    if mode == "plain":
        return (PypacsTarget if name == "pypacs" else OrthancTarget)(peers=peers)
    return (TlsPypacsTarget if name == "pypacs" else TlsOrthancTarget)(files, peers)


def client_port(target: Target, mode: str) -> int:
    if mode == "plain":
        return target.dicom_port
    assert isinstance(target, TlsPypacsTarget | TlsOrthancTarget)
    return target.tls_port


def sink(port: int, mode: str, files: Files, logdir: Path) -> subprocess.Popen[bytes]:
    """DCMTK storescp taking every syntax and keeping nothing, plain or over TLS."""
    tls = files.dcmtk() if mode == "tls" else []
    log_file = (logdir / f"storescp-{mode}.log").open("wb")
    return subprocess.Popen(
        [require_binary("storescp"), "--ignore", "+xa", "-aet", DEST_AE, *tls, str(port)],
        env=nodelay_env(),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_sink(port: int, mode: str, files: Files, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if tls_echo(DEST_AE, port, files) if mode == "tls" else leanfind_echo_ok(port, DEST_AE):
            return
        if proc.poll() is not None:
            raise BenchError(f"storescp ({mode}) exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"storescp ({mode}) did not answer a C-ECHO in 60 s")
        time.sleep(0.1)


def leanfind_echo_ok(port: int, ae_title: str) -> bool:
    try:
        assoc = leanfind.LeanAssociation(port, ae_title, leanfind.VERIFICATION)
        status = assoc.echo()
        assoc.release()
    except (OSError, leanfind.LeanError):
        return False
    return status == 0


@dataclass
class ModeRun:
    """One target in one mode: what it stored and how fast, echo and C-MOVE timings."""

    target: str
    mode: str
    round: int
    instances: int
    dataset_bytes: int
    stored: int = 0
    store_seconds: float = 0.0
    store_statuses: dict[str, int] = field(default_factory=dict)
    store_errors: str = ""
    echo_seconds: list[float] = field(default_factory=list)
    echo_status: int = -1
    negotiated: str = ""  # TLS version and cipher of leanfind's connection
    move: Timing = field(default_factory=Timing)
    error: str = ""

    @property
    def store_mb_s(self) -> float:
        if not self.store_seconds:
            return 0.0
        return self.dataset_bytes * self.stored / self.instances / self.store_seconds / 1e6

    @property
    def echo_ms(self) -> float:
        return statistics.median(self.echo_seconds) * 1000 if self.echo_seconds else 0.0

    @property
    def move_mb_s(self) -> float:
        """Of the median C-MOVE, when every one completed the whole study."""
        whole = set(self.move.completed) == {self.instances} and not self.move.errors
        return self.dataset_bytes / 1e6 / self.move.median if whole and self.move.median else 0.0


def lean_move(
    port: int, target: Target, study: str, context: ssl.SSLContext | None, run: ModeRun
) -> None:
    """One C-MOVE of the study to the destination with leanfind (DCMTK 3.6.7's movescu has
    no TLS options): timed from the connection (and TLS handshake) to the release."""
    query = leanfind.identifier(
        "STUDY", [("StudyInstanceUID", study)]
    )  # built once per move, before the clock starts
    started = time.perf_counter()
    assoc = leanfind.LeanAssociation(port, target.ae_title, leanfind.STUDY_ROOT_MOVE, tls=context)
    try:
        status, completed = assoc.move(query, DEST_AE)
    finally:
        assoc.release()
    run.move.seconds.append(time.perf_counter() - started)
    run.move.completed.append(completed)
    if status != leanfind.STATUS_SUCCESS:
        run.move.errors.append(f"final status {status:#06x}")


CEILING = "storescp"  # the pseudo-target of the peers' ceiling


def run_ceiling(mode: str, files: Files, corpus: Corpus, args: Any, round_: int) -> ModeRun:
    """storescu straight into the storescp destination: what the DCMTK peers manage alone."""
    run = ModeRun(CEILING, mode, round_, corpus.count, corpus.dataset_bytes)
    workdir: Path = args.work / f"{CEILING}-{mode}-{round_}"
    workdir.mkdir(parents=True)
    port = free_port()
    destination = sink(port, mode, files, workdir)
    try:
        wait_for_sink(port, mode, files, destination)
        tls = files.dcmtk() if mode == "tls" else []
        sent = store(DEST_AE, port, [corpus.dicom_dir], workdir / "load", tls)
        run.store_seconds, run.store_statuses = sent.seconds, sent.statuses
        run.store_errors = sent.first_error
        run.stored = sent.succeeded
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        destination.terminate()
        destination.wait(timeout=30)
    return run


def incomplete(run: ModeRun) -> bool:
    """The run failed, or (a target's) a C-MOVE or the echoes did not complete."""
    if run.error or run.stored != run.instances:
        return True
    if run.target == CEILING:
        return False
    moved = set(run.move.completed) == {run.instances} and not run.move.errors
    return not moved or run.echo_status != 0


def run_mode(name: str, mode: str, files: Files, corpus: Corpus, args: Any, round_: int) -> ModeRun:
    run = ModeRun(name, mode, round_, corpus.count, corpus.dataset_bytes)
    workdir: Path = args.work / f"{name}-{mode}-{round_}"
    workdir.mkdir(parents=True)
    dest_port = free_port()
    destination = sink(dest_port, mode, files, workdir)
    target = make(name, mode, files, dest_port)
    tls_flags = files.dcmtk() if mode == "tls" else []
    context = files.context() if mode == "tls" else None
    try:
        wait_for_sink(dest_port, mode, files, destination)
        with target.running(workdir / "target"):
            port = client_port(target, mode)
            sent = store(target.ae_title, port, [corpus.dicom_dir], workdir / "load", tls_flags)
            run.store_seconds = sent.seconds
            run.store_statuses = sent.statuses
            run.store_errors = sent.first_error
            run.stored = target.stored_count()
            if run.stored != corpus.count:
                raise BenchError(f"holds {run.stored} of {corpus.count} ({sent.statuses})")
            if context is not None:
                probe = leanfind.LeanAssociation(port, target.ae_title, leanfind.VERIFICATION,
                                                 tls=context)  # fmt: skip
                assert isinstance(probe.sock, ssl.SSLSocket)
                run.negotiated = f"{probe.sock.version()} {(probe.sock.cipher() or ('',))[0]}"
                probe.release()
            echo = leanfind.time_echo(port, target.ae_title, args.echo_repeat, context)
            run.echo_seconds, run.echo_status = echo.seconds, echo.status
            study = study_uid(corpus)
            for _ in range(args.repeat):
                lean_move(port, target, study, context, run)
    except (
        BenchError,
        OSError,
        ssl.SSLError,
        leanfind.LeanError,
        subprocess.SubprocessError,
    ) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        tail = target.log_text().strip().splitlines()[-3:]
        if tail:
            run.error += " | " + " / ".join(tail)
    finally:
        destination.terminate()
        destination.wait(timeout=30)
    return run


# ---------------------------------------------------------------- output

MEASURES: tuple[tuple[str, str, bool], ...] = (
    ("store_mb_s", "MB/s", True),
    ("echo_ms", "ms", False),
    ("move_mb_s", "MB/s", True),
)


def row_names(corpus: Corpus) -> dict[str, str]:
    mb = corpus.dataset_bytes / 1e6
    return {
        "store_mb_s": f"C-STORE CT 512x512, storescu ({corpus.count} instances, {mb:.0f} MB)",
        "echo_ms": "association set-up + C-ECHO + release (leanfind)",
        "move_mb_s": f"C-MOVE of the study to storescp ({corpus.count} CT)",
    }


def summary(runs: Sequence[ModeRun]) -> dict[str, dict[str, dict[str, float]]]:
    """target: measure: mode: the median over rounds of the runs that completed."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name in dict.fromkeys(r.target for r in runs):
        for measure, _, _ in MEASURES:
            for mode in MODES:
                values = [
                    getattr(r, measure)
                    for r in runs
                    if r.target == name and r.mode == mode and not r.error and getattr(r, measure)
                ]
                if values:
                    table.setdefault(name, {}).setdefault(measure, {})[mode] = statistics.median(
                        values
                    )
    return table


def ratio(values: dict[str, float], higher_is_better: bool) -> float | None:
    """TLS's speed over plain's (below 1: TLS is slower)."""
    plain, tls = values.get("plain"), values.get("tls")
    if not plain or not tls:
        return None
    return tls / plain if higher_is_better else plain / tls


def format_table(runs: Sequence[ModeRun], corpus: Corpus) -> str:
    table = summary(runs)
    names = list(dict.fromkeys(r.target for r in runs))
    labels = row_names(corpus)
    width = max(len(v) for v in labels.values()) + 2
    head = f"{'measure':<{width}}{'unit':>6}" + "".join(
        f"{n + ' plain':>16}{n + ' TLS':>14}{'TLS/plain':>11}" for n in names
    )
    lines = [head, "-" * len(head)]
    for measure, unit, higher in MEASURES:
        cells = ""
        for name in names:
            values = table.get(name, {}).get(measure, {})
            for mode, cell in (("plain", 16), ("tls", 14)):
                cells += f"{values[mode]:>{cell}.1f}" if mode in values else f"{'-':>{cell}}"
            found = ratio(values, higher)
            cells += f"{found:>11.2f}" if found is not None else f"{'-':>11}"
        lines.append(f"{labels[measure]:<{width}}{unit:>6}{cells}")
    lines.append("TLS/plain: the speed over TLS divided by the speed over plain TCP (1: no cost)")
    for run in runs:
        label = f"{run.target} {run.mode} round {run.round}"
        if run.error:
            lines.append(f"! {label}: failed: {run.error}")
            continue
        if incomplete(run):
            lines.append(
                f"! {label}: stored {run.stored} of {run.instances}, C-MOVE completed "
                f"{run.move.completed} {' '.join(run.move.errors)}, echo status "
                f"{run.echo_status:#06x}"
            )
        if run.negotiated:
            lines.append(f"  {label}: leanfind negotiated {run.negotiated}")
    return "\n".join(lines)


def write_json(runs: Sequence[ModeRun], args: Any, names: Sequence[str]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    path: Path = args.out / f"tls-{time.strftime('%Y%m%d-%H%M%S')}.json"
    table = summary(runs)
    document = {
        "benchmark": "tls",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "versions": tool_versions(names, "storescu"),
        "params": {k: str(v) for k, v in vars(args).items()},
        "summary": table,
        "tls_over_plain_speed": {
            name: {m: ratio(table.get(name, {}).get(m, {}), h) for m, _, h in MEASURES}
            for name in names
        },
        "runs": [
            asdict(r) | {"store_mb_s": r.store_mb_s, "echo_ms": r.echo_ms, "move_mb_s": r.move_mb_s}
            for r in runs
        ],
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def target_names(text: str) -> list[str]:
    """An argparse type: comma-separated names among TARGET_NAMES."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected some of {', '.join(TARGET_NAMES)} (dcmqrscp speaks no TLS here)"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tls.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=positive, default=300, help="CT instances (300)")
    parser.add_argument("--repeat", type=positive, default=3, help="C-MOVEs per run (3)")
    parser.add_argument("--echo-repeat", type=positive, default=21, help="echoes timed (21)")
    parser.add_argument("--rounds", type=positive, default=1, help="plain+TLS rounds (1)")
    parser.add_argument(
        "--targets", type=target_names, default=list(TARGET_NAMES), help="pypacs,orthanc"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="generated corpora")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names: list[str] = args.targets
    try:
        for program in ("storescu", "echoscu", "storescp"):
            require_binary(program)
        if "pypacs" in names:
            require_pypacs()
        if "orthanc" in names:
            require_binary("Orthanc", "orthanc")
        _certs_module()
    except BenchError as exc:
        print(f"tls: {exc}", file=sys.stderr)
        return 2
    layout = Layout("ct", args.ct, per_series=-(-args.ct // 2), series_per_study=2)
    corpus = generate(layout, args.data / f"retrieve-ct-{args.ct}")
    args.work = Path(tempfile.mkdtemp(prefix="pypacs-bench-tls-"))
    started = time.perf_counter()
    runs: list[ModeRun] = []
    try:
        files = Files.make(args.work / "certs")
        for round_ in range(1, args.rounds + 1):
            for name in [CEILING, *names]:
                for mode in MODES:
                    log(f"round {round_}: {name} {mode} ...")
                    if name == CEILING:
                        run = run_ceiling(mode, files, corpus, args, round_)
                    else:
                        run = run_mode(name, mode, files, corpus, args, round_)
                    log(
                        f"  failed: {run.error}"
                        if run.error
                        else f"  store {run.store_mb_s:.1f} MB/s, echo {run.echo_ms:.2f} ms, "
                        f"move {run.move_mb_s:.1f} MB/s"
                    )
                    runs.append(run)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"DICOM over TLS beside plain TCP, {args.rounds} round(s) "
        f"({time.perf_counter() - started:.0f} s), {time.strftime('%Y-%m-%d')}, "
        f"load average now {load}"
    )
    print(format_table(runs, corpus))
    print(f"\nresults: {write_json(runs, args, names)}")
    failed = any(incomplete(r) for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
