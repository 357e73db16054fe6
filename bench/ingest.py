"""Ingest benchmark: C-STORE throughput of pypacs, Orthanc and dcmqrscp, side by side.

    .venv/bin/python bench/ingest.py [--small N] [--ct M] [--targets pypacs,orthanc,dcmqrscp]
                                     [--associations 1,4] [--out DIR]

For each corpus (small 64x64, CT 512x512), each number of parallel associations and each
target: start the target fresh in an empty folder, send the corpus with DCMTK ``storescu``
(one process and association per part), time the sending, read what the target stored, its
peak RSS and its index size, stop it. Prints a table and pypacs' ratios to the other targets,
and writes everything as JSON into ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clients import SendResult, store
from data import Corpus, Layout, generate, split
from targets import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    MIB,
    TARGETS,
    BenchError,
    Target,
    log,
    make_target,
    require_binary,
    require_pypacs,
    tool_versions,
)

KINDS = ("small", "ct")


@dataclass(frozen=True)
class Scenario:
    kind: str
    associations: int
    corpus: Corpus
    folders: tuple[Path, ...]  # one per association

    @property
    def name(self) -> str:
        return f"{self.kind} x{self.associations}"


@dataclass
class Result:
    target: str
    scenario: str
    sent: int
    acked: int = 0  # C-STORE responses with a success or warning status
    stored: int = 0  # instances the target holds afterwards
    seconds: float = 0.0
    dataset_bytes: int = 0  # of the instances sent
    peak_rss_mib: float = 0.0
    index_bytes: int = 0  # read while running, as the other figures
    index_bytes_after_stop: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # response status: count
    client_errors: int = 0
    first_client_error: str = ""
    error: str = ""  # the run failed: the target would not start, a client crashed...

    @property
    def per_second(self) -> float:
        """Instances stored per second of sending."""
        return self.stored / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        """Dataset megabytes (10^6 bytes) stored per second of sending."""
        if not self.seconds or not self.sent:
            return 0.0
        return self.dataset_bytes * self.stored / self.sent / self.seconds / 1e6

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "instances_per_second": round(self.per_second, 2),
            "mb_per_second": round(self.mb_per_second, 2),
        }


def run_one(target: Target, scenario: Scenario, workdir: Path) -> Result:
    """One target, fresh, through one scenario."""
    result = Result(target.name, scenario.name, scenario.corpus.count)
    result.dataset_bytes = scenario.corpus.dataset_bytes
    try:
        with target.running(workdir / "target"):
            sent: SendResult = store(
                target.ae_title, target.dicom_port, scenario.folders, workdir / "clients"
            )
            result.seconds = sent.seconds
            result.acked = sent.succeeded
            result.statuses = sent.statuses
            result.client_errors = sent.errors
            result.first_client_error = sent.first_error
            result.stored = target.stored_count()
            result.peak_rss_mib = target.peak_rss_mib()
            result.index_bytes = target.index_size_bytes()
        result.index_bytes_after_stop = target.index_size_bytes()
    except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def format_table(results: Sequence[Result]) -> str:
    header = (
        f"{'target':<9} {'scenario':<9} {'sent':>6} {'acked':>6} {'stored':>6} {'seconds':>8} "
        f"{'inst/s':>8} {'MB/s':>7} {'RSS MiB':>8} {'index MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.error:
            lines.append(f"{r.target:<9} {r.scenario:<9} {r.sent:>6} FAILED: {r.error}")
            continue
        lines.append(
            f"{r.target:<9} {r.scenario:<9} {r.sent:>6} {r.acked:>6} {r.stored:>6} "
            f"{r.seconds:>8.2f} {r.per_second:>8.1f} {r.mb_per_second:>7.1f} "
            f"{r.peak_rss_mib:>8.1f} {r.index_bytes / MIB:>9.2f}"
        )
    return "\n".join(lines)


def ratios(results: Sequence[Result], ours: str = "pypacs") -> dict[str, dict[str, float]]:
    """Per scenario: our instances/s over each other target's."""
    table: dict[str, dict[str, float]] = {}
    for mine in results:
        if mine.target != ours or mine.error or not mine.per_second:
            continue
        for other in results:
            same = other.scenario == mine.scenario and other.target != ours
            if same and not other.error and other.per_second:
                row = table.setdefault(mine.scenario, {})
                row[other.target] = round(mine.per_second / other.per_second, 3)
    return table


def format_ratios(table: dict[str, dict[str, float]], ours: str = "pypacs") -> str:
    others = sorted({name for row in table.values() for name in row})
    if not others:
        return f"(no ratios: {ours} and at least one other target must both succeed)"
    header = f"{'scenario':<9} " + " ".join(f"{ours + '/' + o:>16}" for o in others)
    lines = [f"{ours}'s instances/s over each other target's", header, "-" * len(header)]
    for scenario, row in table.items():
        cells = " ".join(f"{row[o]:>16.2f}" if o in row else f"{'-':>16}" for o in others)
        lines.append(f"{scenario:<9} {cells}")
    return "\n".join(lines)


def check_prerequisites(names: Sequence[str]) -> None:
    """Fail early, naming what is missing."""
    require_binary("storescu")
    require_binary("echoscu")
    for name in names:
        if name not in TARGETS:
            raise BenchError(f"unknown target {name!r}; expected some of {', '.join(TARGETS)}")
    if "pypacs" in names:
        require_pypacs()
    if "orthanc" in names:
        require_binary("Orthanc", "orthanc")
    if "dcmqrscp" in names:
        require_binary("dcmqrscp")


def scenarios(
    counts: dict[str, int], associations: Sequence[int], data_dir: Path
) -> list[Scenario]:
    found: list[Scenario] = []
    for kind in KINDS:
        if counts[kind] <= 0:
            continue
        started = time.perf_counter()
        corpus = generate(Layout(kind, counts[kind]), data_dir / f"{kind}-{counts[kind]}")
        log(
            f"corpus {kind}: {corpus.count} instances, {corpus.dataset_bytes / 1e6:.1f} MB, "
            f"{corpus.layout.studies} studies ({time.perf_counter() - started:.1f} s)"
        )
        for n in associations:
            if n == 1:
                folders: tuple[Path, ...] = (corpus.dicom_dir,)
            else:
                folders = tuple(split(corpus, n, corpus.folder / f"split{n}"))
            found.append(Scenario(kind, n, corpus, folders))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="64x64 instances (2000)")
    parser.add_argument("--ct", type=int, default=300, help="512x512 instances (300)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--associations", default="1,4", help="parallel associations to try")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder for the generated corpora"
    )
    parser.add_argument("--keep", action="store_true", help="keep the targets' work folders")
    return parser


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    associations = [int(n) for n in args.associations.split(",")]
    check_prerequisites(names)
    plan = scenarios({"small": args.small, "ct": args.ct}, associations, args.data)
    work = Path(tempfile.mkdtemp(prefix="pypacs-bench-work-"))
    results: list[Result] = []
    try:
        for scenario in plan:
            for name in names:
                workdir = work / f"{scenario.kind}-x{scenario.associations}-{name}"
                log(f"{scenario.name}: {name} ...")
                result = run_one(make_target(name), scenario, workdir)
                log(f"  {result.error or f'{result.stored} stored in {result.seconds:.2f} s'}")
                results.append(result)
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = ratios(results)
    print(format_table(results))
    print()
    print(format_ratios(table))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "benchmark": "ingest",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": tool_versions(names, "storescu"),
        "params": {"small": args.small, "ct": args.ct, "associations": associations},
        "results": [r.as_json() for r in results],
        "ratios_instances_per_second": table,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {path}" + (f"; work folders kept in {work}" if args.keep else ""))
    return 1 if any(r.error for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
