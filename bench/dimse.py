"""The DIMSE rows of the benchmark in one run: pypacs, Orthanc and dcmqrscp side by side.

    .venv/bin/python bench/dimse.py [--quick] [--small 2000] [--ct 300] [--studies 5051]
                                    [--repeat 7] [--rounds 3] [--targets pypacs,orthanc,dcmqrscp]
                                    [--out DIR] [--data DIR]

C-STORE (DCMTK storescu: small 64x64 over 1 and 4 associations, 512x512 CT over 1), C-FIND
(bench/leanfind.py over one association: universal, SMI*, one month, IMAGE level of one big
series, on a study-level corpus), C-MOVE to storescp and C-GET with getscu of the CT study, and
association set-up + C-ECHO + release (leanfind). Every target starts fresh for each part, on
the same generated data. Prints one table with pypacs' speed over Orthanc's (above 1: pypacs
is faster) and writes everything as JSON into ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import leanfind
from data import Layout, StudyCorpus, StudyLayout, generate, generate_studies
from find import TargetRun, build_queries, held, load, load_plan, new_target
from ingest import Result, Scenario, run_one, scenarios
from retrieve import run_target as run_retrieve
from targets import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    TARGETS,
    BenchError,
    DcmqrscpTarget,
    log,
    make_target,
    require_binary,
    require_pypacs,
    tool_versions,
)

OURS, THEIRS = "pypacs", "orthanc"
FIND_ROWS = ("universal (all studies)", "PatientName SMI*", "one-month StudyDate", "IMAGE level")
QUICK = {"small": 200, "ct": 30, "studies": 300, "big_series": 50, "repeat": 3}


@dataclass
class Row:
    """One measure of the table: a figure per target, and whether higher is better."""

    name: str
    unit: str
    higher_is_better: bool
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # target: why its figure is odd

    def ratio(self) -> float | None:
        """pypacs' speed over Orthanc's (above 1: pypacs is faster)."""
        ours, theirs = self.values.get(OURS), self.values.get(THEIRS)
        if not ours or not theirs:
            return None
        return ours / theirs if self.higher_is_better else theirs / ours


@dataclass
class Bench:
    names: list[str]
    rows: dict[str, Row] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str, unit: str, higher_is_better: bool) -> Row:
        return self.rows.setdefault(name, Row(name, unit, higher_is_better))


# ---------------------------------------------------------------- C-STORE


def run_ingest(bench: Bench, args: argparse.Namespace) -> None:
    """Each scenario ``--rounds`` times, the targets taking turns within a round (A B A B,
    not A A B B): a machine whose speed drifts slows both alike; each row is the median
    of a target's rounds."""
    wanted = {("small", 1), ("small", 4), ("ct", 1)}
    chosen: list[Scenario] = [
        s
        for s in scenarios({"small": args.small, "ct": args.ct}, (1, 4), args.data)
        if (s.kind, s.associations) in wanted
    ]
    results: list[Result] = []
    for scenario in chosen:
        ct = scenario.kind == "ct"
        label = (
            f"C-STORE CT 512x512, 1 association ({scenario.corpus.count} instances)"
            if ct
            else f"C-STORE small 64x64, {scenario.associations} association"
            + ("s" if scenario.associations > 1 else "")
            + f" ({scenario.corpus.count} instances)"
        )
        row = bench.row(label, "MB/s" if ct else "inst/s", True)
        figures: dict[str, list[float]] = {name: [] for name in bench.names}
        for number in range(1, args.rounds + 1):
            for name in bench.names:
                log(f"C-STORE {scenario.name}: {name}, round {number} of {args.rounds} ...")
                result = run_one(make_target(name), scenario, args.work / f"store-{name}")
                shutil.rmtree(args.work / f"store-{name}", ignore_errors=True)
                results.append(result)
                if result.error:
                    row.notes[name] = f"failed: {result.error}"
                    continue
                figures[name].append(result.mb_per_second if ct else result.per_second)
                if result.stored != result.sent or result.acked != result.sent:
                    row.notes[name] = (
                        f"acked {result.acked}, stored {result.stored} of {result.sent}"
                    )
                log(f"  {figures[name][-1]:.1f} {row.unit}")
        for name, values in figures.items():
            if values:  # a failed round is in the row's notes
                row.values[name] = statistics.median(values)
    bench.raw["store"] = [r.as_json() for r in results]


# ---------------------------------------------------------------- C-FIND and C-ECHO


def find_target(
    bench: Bench, name: str, corpus: StudyCorpus, repeat: int, work: Path
) -> dict[str, Any]:
    """Load the study corpus into a fresh target, then time the queries with leanfind."""
    queries = {q.name: q for q in build_queries(corpus)}
    chosen = [queries[n] for n in FIND_ROWS[:3]]
    chosen.append(next(q for n, q in queries.items() if n.startswith(FIND_ROWS[3])))
    target = new_target(name, len(corpus.studies))
    if name == DcmqrscpTarget.name:  # one association: it loses instances with more
        plan = load_plan(corpus, 1, DcmqrscpTarget.MAX_STUDIES)
    else:
        plan = load_plan(corpus, 4)
    run = TargetRun(name, plan.instances, len(plan.folders))
    found: dict[str, Any] = {"load": run}
    with target.running(work / "target"):
        log(f"C-FIND: {name}: loading {plan.studies} studies ...")
        load(run, target, plan, work / "clients")
        studies = held(corpus, target)
        log(f"  loaded {run.stored} instances in {run.load_seconds:.1f} s")
        echo = leanfind.time_echo(target.dicom_port, target.ae_title, repeat * 3)
        row = bench.row("association set-up + C-ECHO + release", "ms", False)
        row.values[name] = echo.median_ms
        found["echo"] = echo
        for query in chosen:
            keys = [*query.matching]
            returned = find_return_keys(query.level)
            keys += [(k, "") for k in returned if k not in dict(query.matching)]
            timing = leanfind.time_find(
                target.dicom_port, target.ae_title, query.level, keys, repeat
            )
            expected = query.count(studies)
            owed = query.count(corpus.studies)
            label = f"C-FIND {query.name} ({owed} matches)"
            if query.level == "STUDY":
                label = f"C-FIND {query.name}, {len(corpus.studies)} studies ({owed} matches)"
            row = bench.row(label, "ms", False)
            row.values[name] = timing.median_ms
            counts = set(timing.counts)
            if counts != {expected} or timing.status != leanfind.STATUS_SUCCESS:
                row.notes[name] = f"{sorted(counts)} responses, final status {timing.status:#06x}"
            if len(studies) < len(corpus.studies):
                row.notes[name] = (
                    row.notes.get(name, "") + f" holds {len(studies)} studies "
                    f"(its ceiling), {timing.counts[-1]} responses"
                ).strip()
            found[query.name] = timing
            log(f"  {query.name}: {timing.median_ms:.2f} ms, {timing.counts[-1]} responses")
    return found


def find_return_keys(level: str) -> tuple[str, ...]:
    from find import IMAGE_RETURN_KEYS, STUDY_RETURN_KEYS

    return STUDY_RETURN_KEYS if level == "STUDY" else IMAGE_RETURN_KEYS


def run_find(bench: Bench, args: argparse.Namespace) -> None:
    layout = StudyLayout(args.studies, big_series=args.big_series)
    corpus = generate_studies(layout, args.data / f"studies-{args.studies}-big{args.big_series}")
    log(f"study corpus: {len(corpus.studies)} studies, {corpus.count} instances")
    raw: dict[str, Any] = {}
    for name in bench.names:
        work = args.work / f"find-{name}"
        try:
            found = find_target(bench, name, corpus, args.repeat, work)
        except (BenchError, leanfind.LeanError, OSError, subprocess.SubprocessError) as exc:
            log(f"  {name} FAILED: {exc}")
            for row in bench.rows.values():
                if row.unit == "ms" and name not in row.values:
                    row.notes[name] = f"failed: {exc}"
            raw[name] = {"error": str(exc)}
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        raw[name] = {
            key: (value.as_json() if key == "load" else vars(value)) for key, value in found.items()
        }
    bench.raw["find"] = raw


# ---------------------------------------------------------------- C-MOVE and C-GET


def run_retrieves(bench: Bench, args: argparse.Namespace) -> None:
    # One study of two series, as retrieve.py has it (ingest's layout makes 100-instance series).
    layout = Layout("ct", args.ct, per_series=-(-args.ct // 2), series_per_study=2)
    corpus = generate(layout, args.data / f"retrieve-ct-{args.ct}")
    raw = []
    for name in bench.names:
        log(f"C-MOVE/C-GET: {name} ...")
        work = args.work / f"retrieve-{name}"
        run = run_retrieve(name, corpus, args.repeat_retrieve, work)
        shutil.rmtree(work, ignore_errors=True)
        raw.append(vars(run) | {"move": vars(run.move), "get": vars(run.get)})
        mb = corpus.dataset_bytes / 1e6
        for op, timing, client in (
            ("C-MOVE", run.move, "to storescp"),
            ("C-GET", run.get, "getscu"),
        ):
            row = bench.row(f"{op} of {corpus.count} CT ({mb:.0f} MB) {client}", "MB/s", True)
            if run.error:
                row.notes[name] = f"failed: {run.error}"
                continue
            row.values[name] = run.rate(timing)[1]
            if set(timing.completed) != {corpus.count} or timing.errors:
                row.notes[name] = f"completed {timing.completed} {' '.join(timing.errors)[:120]}"
            log(f"  {op}: {row.values[name]:.1f} MB/s")
    bench.raw["retrieve"] = raw


# ---------------------------------------------------------------- output


def format_table(bench: Bench) -> str:
    width = max(len(r.name) for r in bench.rows.values()) + 2
    head = f"{'measure':<{width}}{'unit':>7}" + "".join(f"{n:>11}" for n in bench.names)
    head += f"{'pypacs/orthanc':>16}"
    lines = [head, "-" * len(head)]
    for row in bench.rows.values():
        cells = "".join(
            f"{row.values[n]:>10.1f}{'*' if n in row.notes else ' '}"
            if n in row.values
            else f"{'-':>10}{'*' if n in row.notes else ' '}"
            for n in bench.names
        )
        ratio = row.ratio()
        lines.append(
            f"{row.name:<{width}}{row.unit:>7}{cells}"
            + (f"{ratio:>16.2f}" if ratio is not None else f"{'-':>16}")
        )
    lines.append("pypacs/orthanc: pypacs' speed over Orthanc's (above 1: pypacs is faster)")
    notes = [(r.name, n, t) for r in bench.rows.values() for n, t in r.notes.items()]
    lines += [f"* {target}, {name}: {text}" for name, target, text in notes]
    return "\n".join(lines)


def write_json(bench: Bench, args: argparse.Namespace) -> Path:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dimse-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "benchmark": "dimse",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": tool_versions(bench.names, "storescu"),
        "params": {k: str(v) for k, v in vars(args).items()},
        "rows": [{**vars(r), "pypacs_over_orthanc_speed": r.ratio()} for r in bench.rows.values()],
        "raw": bench.raw,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on small sizes")
    parser.add_argument("--small", type=int, default=2000, help="small instances (2000)")
    parser.add_argument("--ct", type=int, default=300, help="CT instances (300)")
    parser.add_argument("--studies", type=int, default=5051, help="studies for C-FIND (5051)")
    parser.add_argument("--big-series", type=int, default=300, help="IMAGE-level series (300)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query (7)")
    parser.add_argument("--repeat-retrieve", type=int, default=3, help="retrieves (3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="C-STORE runs per target, taken in turns (3)"
    )
    parser.add_argument("--parts", default="store,find,retrieve", help="comma-separated")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="generated corpora")
    return parser


def check_prerequisites(names: Sequence[str]) -> None:
    for program in ("storescu", "echoscu", "movescu", "getscu", "storescp"):
        require_binary(program)
    for name in names:
        if name not in TARGETS:
            raise BenchError(f"unknown target {name!r}; expected some of {', '.join(TARGETS)}")
    if OURS in names:
        require_pypacs()
    if THEIRS in names:
        require_binary("Orthanc", "orthanc")
    if DcmqrscpTarget.name in names:
        require_binary("dcmqrscp")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.repeat_retrieve = 1
        args.rounds = 1
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    parts = {p.strip() for p in args.parts.split(",")}
    try:
        check_prerequisites(names)
    except BenchError as exc:
        print(f"dimse: {exc}", file=sys.stderr)
        return 2
    bench = Bench(names)
    args.work = Path(tempfile.mkdtemp(prefix="pypacs-bench-dimse-"))
    started = time.perf_counter()
    try:
        if "store" in parts:
            run_ingest(bench, args)
        if "find" in parts:
            run_find(bench, args)
        if "retrieve" in parts:
            run_retrieves(bench, args)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    print(f"DIMSE, one run ({time.perf_counter() - started:.0f} s), {time.strftime('%Y-%m-%d')}")
    print(format_table(bench))
    print(f"\nresults: {write_json(bench, args)}")
    failed = any(t.startswith("failed") for r in bench.rows.values() for t in r.notes.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
