"""Retrieve benchmark: C-MOVE and C-GET of one CT study from pypacs, Orthanc and dcmqrscp.

    .venv/bin/python bench/retrieve.py [--instances 300] [--repeat 3]
                                       [--targets pypacs,orthanc,dcmqrscp] [--out DIR]

For each target: start it fresh, load one study of ``--instances`` 512x512 16-bit CT
instances (two series) with DCMTK ``storescu``, then retrieve the whole study ``--repeat``
times each with DCMTK ``movescu`` (to a DCMTK ``storescp --ignore`` destination) and with
``getscu --ignore``, timing each run from start to exit. The server's resident memory is
sampled every 50 ms while it retrieves: the peak, beside what it held just before, shows
whether memory grows with the study. Prints a table and pypacs' ratios to the other targets
(throughput: above 1 is faster), and writes everything as JSON into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from clients import store
from data import Corpus, Layout, generate
from targets import (
    BENCH_AE,
    DEFAULT_DATA,
    DEFAULT_OUT,
    HOST,
    TARGETS,
    BenchError,
    Peer,
    Target,
    echo,
    free_port,
    make_target,
    nodelay_env,
    process_tree,
    require_binary,
    require_pypacs,
    status_kib,
    tool_versions,
)

DEST_AE = "BENCHDEST"
CLIENT_TIMEOUT = 600.0


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)  # sub-operations the client saw succeed
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else 0.0


@dataclass
class Run:
    target: str
    instances: int
    dataset_bytes: int
    loaded: int = 0
    move: Timing = field(default_factory=Timing)
    get: Timing = field(default_factory=Timing)
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0  # while retrieving
    error: str = ""

    def rate(self, timing: Timing) -> tuple[float, float]:
        """Instances/s and MB/s (10^6 bytes of dataset) of the median run."""
        if not timing.median:
            return 0.0, 0.0
        return self.instances / timing.median, self.dataset_bytes / 1e6 / timing.median


class RssSampler:
    """The largest resident set (VmRSS, the process and its children) while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in process_tree(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kib = max(self.peak_kib, self.current_kib())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sink(port: int, logdir: Path) -> subprocess.Popen[bytes]:
    """DCMTK storescp taking every syntax and keeping nothing: the same C-STORE SCP for all."""
    log = (logdir / "storescp.log").open("wb")
    return subprocess.Popen(
        [require_binary("storescp"), "--ignore", "+xa", "-aet", DEST_AE, str(port)],
        env=nodelay_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_client(command: Sequence[str], pattern: str) -> tuple[float, int, str]:
    """Run a retrieve client: its wall time, the last completed count its output shows, and
    an error line ('' when it exited 0)."""
    started = time.perf_counter()
    out = subprocess.run(
        command, capture_output=True, text=True, env=nodelay_env(), timeout=CLIENT_TIMEOUT
    )
    seconds = time.perf_counter() - started
    counts = re.findall(pattern, out.stdout + out.stderr)
    error = "" if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()[-300:]}"
    return seconds, int(counts[-1]) if counts else -1, error


def move_command(target: Target, study: str) -> list[str]:
    return [
        *(require_binary("movescu"), "-d", "-S", "-aet", BENCH_AE, "-aec", target.ae_title),
        *("-aem", DEST_AE, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"),
        *(HOST, str(target.dicom_port)),
    ]


def get_command(target: Target, study: str) -> list[str]:
    return [
        *(require_binary("getscu"), "-v", "--ignore", "-S", "-aet", BENCH_AE),
        *("-aec", target.ae_title, "-k", "QueryRetrieveLevel=STUDY"),
        *("-k", f"StudyInstanceUID={study}", HOST, str(target.dicom_port)),
    ]


def run_target(name: str, corpus: Corpus, repeat: int, workdir: Path) -> Run:
    run = Run(name, corpus.count, corpus.dataset_bytes)
    dest_port = free_port()
    # The destination, and the bench's own client: Orthanc moves and gets only for AEs
    # it knows (DicomAlwaysAllowMove/Get are false by default), as a user would set it up.
    target = make_target(name, peers=[Peer(DEST_AE, dest_port), Peer(BENCH_AE, free_port())])
    workdir.mkdir(parents=True)
    destination = sink(dest_port, workdir)
    try:
        deadline = time.monotonic() + 30
        while not echo(DEST_AE, dest_port):
            if time.monotonic() > deadline:
                raise BenchError("storescp did not start")
            time.sleep(0.1)
        with target.running(workdir / "target"):
            sent = store(target.ae_title, target.dicom_port, [corpus.dicom_dir], workdir / "load")
            run.loaded = target.stored_count()
            if run.loaded != corpus.count:
                raise BenchError(f"{name} holds {run.loaded} of {corpus.count} ({sent.statuses})")
            study = study_uid(corpus)
            sampler = RssSampler(target.proc.pid)
            run.rss_before_mib = sampler.current_kib() / 1024
            with sampler:
                for _ in range(repeat):
                    for timing, command, pattern in (
                        (
                            run.move,
                            move_command(target, study),
                            r"Completed Suboperations\s*:\s*(\d+)",
                        ),
                        (
                            run.get,
                            get_command(target, study),
                            r"Number of Completed Suboperations\s*:\s*(\d+)",
                        ),
                    ):
                        seconds, completed, error = run_client(command, pattern)
                        timing.seconds.append(seconds)
                        timing.completed.append(completed)
                        if error:
                            timing.errors.append(error)
            run.rss_peak_mib = sampler.peak_kib / 1024
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        run.error = str(exc)
    finally:
        destination.terminate()
        destination.wait(timeout=30)
    return run


def study_uid(corpus: Corpus) -> str:
    return str(dcmread(corpus.files[0], stop_before_pixels=True).StudyInstanceUID)


def format_table(runs: Sequence[Run]) -> str:
    head = (
        f"{'target':<10} {'op':<7} {'median s':>9} {'inst/s':>8} {'MB/s':>7} "
        f"{'completed':>10} {'RSS before':>11} {'RSS peak':>9}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        if run.error:
            lines.append(f"{run.target:<10} error: {run.error}")
            continue
        for op, timing in (("C-MOVE", run.move), ("C-GET", run.get)):
            per_s, mb_s = run.rate(timing)
            done = "/".join(str(c) for c in timing.completed)
            lines.append(
                f"{run.target:<10} {op:<7} {timing.median:>9.2f} {per_s:>8.0f} {mb_s:>7.1f} "
                f"{done:>10} {run.rss_before_mib:>10.0f}M {run.rss_peak_mib:>8.0f}M"
            )
            lines += [f"{'':<10} {op:<7} error: {e}" for e in timing.errors]
    return "\n".join(lines)


def ratios(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
    """pypacs' throughput divided by each other target's (above 1: pypacs is faster)."""
    ours = next((r for r in runs if r.target == "pypacs" and not r.error), None)
    table: dict[str, dict[str, float]] = {}
    if ours is None:
        return table
    for other in runs:
        if other is ours or other.error:
            continue
        table[other.target] = {
            op: (theirs.median / mine.median if mine.median else 0.0)
            for op, mine, theirs in (
                ("C-MOVE", ours.move, other.move),
                ("C-GET", ours.get, other.get),
            )
        }
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instances in the study")
    parser.add_argument("--repeat", type=int, default=3, help="retrieves of each kind")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus cache folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    try:
        for name in names:
            if name not in TARGETS:
                raise BenchError(f"unknown target {name!r}")
        if "pypacs" in names:
            require_pypacs()
        for binary in ("storescu", "movescu", "getscu", "storescp", "echoscu"):
            require_binary(binary)
        layout = Layout(
            "ct", args.instances, per_series=-(-args.instances // 2), series_per_study=2
        )
        corpus = generate(layout, args.data / f"retrieve-ct-{args.instances}")
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(
        f"one study of {corpus.count} CT instances ({corpus.dataset_bytes / 1e6:.0f} MB), "
        f"{args.repeat} retrieves of each kind",
        file=sys.stderr,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="pypacs-bench-retrieve-"))
    runs = []
    for name in names:
        print(f"{name}: loading and retrieving...", file=sys.stderr, flush=True)
        runs.append(run_target(name, corpus, args.repeat, work / name))
    print(format_table(runs))
    table = ratios(runs)
    for other, values in table.items():
        cells = ", ".join(f"{op} {value:.2f}" for op, value in values.items())
        print(f"pypacs / {other} (throughput): {cells}")
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "retrieve",
        "when": stamp,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "versions": tool_versions(names, "movescu"),
        "runs": [asdict(r) for r in runs],
        "ratios": table,
    }
    path = args.out / f"retrieve-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}", file=sys.stderr)
    return 0 if all(not r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
