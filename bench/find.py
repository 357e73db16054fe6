"""C-FIND latency benchmark: pypacs, Orthanc and dcmqrscp side by side.

    .venv/bin/python bench/find.py [--studies 10000] [--targets pypacs,orthanc,dcmqrscp]
                                   [--repeat 7] [--associations 4] [--out DIR] [--data DIR]

Generates a study-level corpus (bench/data.py, kind ``studies``), then for each target: start
it fresh in an empty folder, load the corpus with DCMTK ``storescu`` (not timed as a result,
but printed), check what it stored, time ``echoscu`` (the client's own floor) and each query
with DCMTK ``findscu -S`` ``--repeat`` times (median wall time of the whole findscu process),
counting the responses of every run, stop it. Prints a table, pypacs' time over each other
target's, and writes everything as JSON into ``--out``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from clients import store
from data import StudyCorpus, StudyFacts, StudyLayout, generate_studies, split_files
from targets import (
    BENCH_AE,
    DEFAULT_DATA,
    DEFAULT_OUT,
    HOST,
    TARGETS,
    BenchError,
    DcmqrscpTarget,
    OrthancTarget,
    Peer,
    Target,
    free_port,
    log,
    make_target,
    nodelay_env,
    require_binary,
    require_pypacs,
    tool_versions,
)

CLIENT_TIMEOUT = 600.0
OURS = "pypacs"
ECHO = "echoscu (association+echo+release)"

# Asked for at STUDY level by every study query (with the matching key's value, if any).
STUDY_RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
IMAGE_RETURN_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
MONTH = ("20210301", "20210331")  # the one-month StudyDate range
AGE = "045Y"  # the non-indexed attribute's value (PatientAge is not in pypacs' key table)
PENDING = re.compile(r"Received Find Response \d+ \(Pending", re.MULTILINE)
FINAL = re.compile(r"Received Final Find Response \(([^)]*)\)")


@dataclass(frozen=True)
class FindQuery:
    """One C-FIND: its level, matching keys, and how many responses a target holding
    ``studies`` owes (``expected``)."""

    name: str
    level: str
    matching: tuple[tuple[str, str], ...]
    count: Callable[[Sequence[StudyFacts]], int]

    def findscu_keys(self) -> list[str]:
        values = dict(self.matching)
        returned = STUDY_RETURN_KEYS if self.level == "STUDY" else IMAGE_RETURN_KEYS
        keys = [*values, *(k for k in returned if k not in values)]
        args = ["-k", f"QueryRetrieveLevel={self.level}"]
        for keyword in keys:
            args += ["-k", f"{keyword}={values.get(keyword, '')}"]
        return args


def build_queries(corpus: StudyCorpus) -> list[FindQuery]:
    """The queries. Their targets lie in the last studies sent (the big study's patient and
    the study before it), which every target holds, dcmqrscp included."""
    big, before = corpus.studies[-1], corpus.studies[-2]
    return [
        FindQuery(
            "exact PatientID",
            "STUDY",
            (("PatientID", big.patient_id),),
            lambda s: sum(f.patient_id == big.patient_id for f in s),
        ),
        FindQuery(
            "PatientName SMI*",
            "STUDY",
            (("PatientName", "SMI*"),),
            lambda s: sum(f.patient_name.upper().startswith("SMI") for f in s),
        ),
        FindQuery(
            "one-month StudyDate",
            "STUDY",
            (("StudyDate", "-".join(MONTH)),),
            lambda s: sum(MONTH[0] <= f.study_date <= MONTH[1] for f in s),
        ),
        FindQuery(
            "exact AccessionNumber",
            "STUDY",
            (("AccessionNumber", before.accession),),
            lambda s: sum(f.accession == before.accession for f in s),
        ),
        FindQuery("universal (all studies)", "STUDY", (), len),
        FindQuery(
            f"IMAGE level, {big.instances}-inst series",
            "IMAGE",
            (("StudyInstanceUID", big.study_uid), ("SeriesInstanceUID", big.series_uid)),
            lambda s: sum(f.instances for f in s if f.series_uid == big.series_uid),
        ),
        FindQuery(
            f"PatientAge={AGE} (not indexed)",
            "STUDY",
            (("PatientAge", AGE),),
            lambda s: sum(f.patient_age == AGE for f in s),
        ),
    ]


@dataclass
class Timing:
    """``repeat`` runs of one client command against one target."""

    name: str
    expected: int = 0  # responses the target owes, given the studies it holds
    times_ms: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # responses of each run, warm-up first
    status: str = ""  # the final response status (of the last run) or the client's failure

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else 0.0

    @property
    def count(self) -> int:
        return self.counts[-1] if self.counts else 0

    @property
    def steady(self) -> bool:
        """Every run got the same number of responses."""
        return len(set(self.counts)) <= 1

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "median_ms": round(self.median_ms, 2), "count": self.count}


@dataclass
class TargetRun:
    target: str
    sent: int
    associations: int
    load_seconds: float = 0.0
    acked: int = 0
    stored: int = 0  # instances the target holds after loading
    held_studies: int = 0  # studies it holds after loading
    notes: list[str] = field(default_factory=list)
    timings: dict[str, Timing] = field(default_factory=dict)
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timings"] = {name: t.as_json() for name, t in self.timings.items()}
        return data


def run_client(command: Sequence[str]) -> tuple[float, str, int]:
    """Run a DCMTK client; (wall ms, its whole output, exit status)."""
    started = time.perf_counter()
    done = subprocess.run(
        command,
        env=nodelay_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
        timeout=CLIENT_TIMEOUT,
    )
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, done.stdout.decode(errors="replace"), done.returncode


def time_echo(target: Target, repeat: int) -> Timing:
    command = [require_binary("echoscu"), "-aet", BENCH_AE, "-aec", target.ae_title]
    command += [HOST, str(target.dicom_port)]
    timing = Timing(ECHO)
    run_client(command)  # warm-up
    for _ in range(repeat):
        ms, output, code = run_client(command)
        timing.times_ms.append(ms)
        timing.status = "Success" if code == 0 else f"echoscu exit {code}: {output[-200:]}"
    return timing


def time_find(target: Target, query: FindQuery, repeat: int, expected: int) -> Timing:
    """One warm-up run, then ``repeat`` timed ones; every run's responses are counted
    (``findscu -v -sr`` logs one line a response without dumping it)."""
    command = [require_binary("findscu"), "-v", "-sr", "-S", "-aet", BENCH_AE]
    command += ["-aec", target.ae_title, HOST, str(target.dicom_port), *query.findscu_keys()]
    timing = Timing(query.name, expected)
    for run in range(repeat + 1):
        ms, output, code = run_client(command)
        if run:
            timing.times_ms.append(ms)
        timing.counts.append(len(PENDING.findall(output)))
        final = FINAL.search(output)
        if final and code == 0:
            timing.status = final.group(1)
        else:
            errors = [line for line in output.splitlines() if line.startswith(("E:", "F:"))]
            timing.status = f"findscu exit {code}, " + (
                f"final status {final.group(1)}" if final else "no final response"
            )
            timing.status += ": " + " | ".join(errors[:3])
    return timing


def held(corpus: StudyCorpus, target: Target) -> tuple[StudyFacts, ...]:
    """The studies a target holds of the corpus: all of them, except for dcmqrscp, whose
    storage folder is read (past its quota it deletes what it takes for the oldest study)."""
    if not isinstance(target, DcmqrscpTarget):
        return corpus.studies
    uids = set()
    for path in target.storage.iterdir():
        if path.is_file() and path.name != "index.dat":
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            uids.add(str(ds.StudyInstanceUID))
    return tuple(study for study in corpus.studies if study.study_uid in uids)


def dcmqrscp_notes(target: Target, studies: int) -> list[str]:
    if not isinstance(target, DcmqrscpTarget) or studies <= target.MAX_STUDIES:
        return []
    capped = "too large" in target.log_text()
    return [
        f"AETable quota set to {target.max_studies} studies; dcmqrscp "
        + ("lowered it to" if capped else "has a compiled-in ceiling of")
        + f" {target.MAX_STUDIES} (DB_UpperMaxStudies) and past it deletes studies (see "
        f"bench/README.md): it cannot hold {studies} studies, so it is sent only "
        f"{target.MAX_STUDIES} (the queries' own and the first others); its counts and times "
        f"are for a {target.MAX_STUDIES}-study archive"
    ]


@dataclass(frozen=True)
class LoadPlan:
    """What one target is sent: ``folders``, one per storescu, sent all at once."""

    folders: tuple[Path, ...]
    studies: int
    instances: int


def load_plan(corpus: StudyCorpus, parts: int, max_studies: int | None = None) -> LoadPlan:
    """The whole corpus, or only ``max_studies`` studies: the ones the selective queries look
    for (the big study's patient's and the accession number's), then the first others."""
    big, before = corpus.studies[-1], corpus.studies[-2]
    wanted = {s.study_uid for s in corpus.studies if s.patient_id == big.patient_id}
    wanted.add(before.study_uid)
    room = len(corpus.studies) if max_studies is None else max_studies - len(wanted)
    chosen: list[Path] = []
    studies = 0
    files = iter(corpus.files)
    for study in corpus.studies:
        batch = [next(files) for _ in range(study.instances)]
        if study.study_uid in wanted or room > 0:
            room -= study.study_uid not in wanted
            chosen += batch
            studies += 1
    name = f"send{parts}" + (f"-max{max_studies}" if max_studies is not None else "")
    folders = split_files(chosen, parts, corpus.folder / name)
    return LoadPlan(tuple(folders), studies, len(chosen))


def load(run: TargetRun, target: Target, plan: LoadPlan, logdir: Path) -> None:
    sent = store(target.ae_title, target.dicom_port, plan.folders, logdir)
    run.load_seconds = sent.seconds
    run.acked = sent.succeeded
    run.stored = target.stored_count()
    if sent.errors or sent.refused or any(sent.exit_codes):
        run.notes.append(
            f"storescu: exit {sent.exit_codes}, {sent.refused} refused, {sent.errors} errors "
            f"({sent.first_error})"
        )


def run_target(
    target: Target,
    corpus: StudyCorpus,
    plan: LoadPlan,
    queries: Sequence[FindQuery],
    repeat: int,
    workdir: Path,
) -> TargetRun:
    run = TargetRun(target.name, plan.instances, len(plan.folders))
    try:
        with target.running(workdir / "target"):
            run.notes += dcmqrscp_notes(target, len(corpus.studies))
            load(run, target, plan, workdir / "clients")
            studies = held(corpus, target)
            run.held_studies = len(studies)
            if run.held_studies < len(corpus.studies):
                run.notes.append(
                    f"holds {run.held_studies} of {len(corpus.studies)} studies "
                    f"({sum(s.instances for s in studies)} instances); the queries' expected "
                    "counts are for what it holds"
                )
            if run.stored != plan.instances or run.held_studies != plan.studies:
                run.notes.append(
                    f"stored {run.stored} instances of {plan.instances} sent, holds "
                    f"{run.held_studies} studies of {plan.studies} sent"
                )
            log(
                f"  loaded in {run.load_seconds:.1f} s "
                f"({run.stored / max(run.load_seconds, 1e-9):.0f} inst/s): stored {run.stored} "
                f"of {run.sent} sent ({run.acked} acked)"
            )
            run.timings[ECHO] = time_echo(target, repeat)
            for query in queries:
                timing = time_find(target, query, repeat, query.count(studies))
                run.timings[query.name] = timing
                log(f"  {query.name}: {timing.median_ms:.1f} ms, {timing.count} responses")
    except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    return run


def _cell(run: TargetRun, name: str) -> str:
    timing = run.timings.get(name)
    if run.error or timing is None:
        return f"{'failed':>17}"
    if name == ECHO:
        return f"{timing.median_ms:>9.1f} {'':>7}"
    flag = "" if timing.count == timing.expected and timing.steady else "!"
    if not timing.status.startswith("Success"):
        flag += "E"
    return f"{timing.median_ms:>9.1f} {str(timing.count) + flag:>7}"


def format_table(
    runs: Sequence[TargetRun], queries: Sequence[FindQuery], corpus: StudyCorpus
) -> str:
    names = [ECHO, *(q.name for q in queries)]
    width = max(len(n) for n in names)
    header = f"{'query':<{width}} {'expect':>6} " + " ".join(
        f"{r.target + ' ms':>9} {'count':>7}" for r in runs
    )
    lines = [header, "-" * len(header)]
    expected = {q.name: str(q.count(corpus.studies)) for q in queries}
    for name in names:
        cells = " ".join(_cell(r, name) for r in runs)
        lines.append(f"{name:<{width}} {expected.get(name, ''):>6} {cells}")
    lines.append(
        "expect: responses owed by a target holding the whole corpus; '!' after a count: not "
        "what that target owes for the studies it holds (or runs disagreed); 'E': the final "
        "status was not Success"
    )
    return "\n".join(lines)


def ratios(runs: Sequence[TargetRun]) -> dict[str, dict[str, float]]:
    """Per query: pypacs' median time over each other target's (<1: pypacs is faster)."""
    ours = next((r for r in runs if r.target == OURS and not r.error), None)
    table: dict[str, dict[str, float]] = {}
    if ours is None:
        return table
    for other in runs:
        if other.target == OURS or other.error:
            continue
        for name, mine in ours.timings.items():
            theirs = other.timings.get(name)
            if theirs and theirs.median_ms and mine.median_ms:
                table.setdefault(name, {})[other.target] = round(
                    mine.median_ms / theirs.median_ms, 3
                )
    return table


def format_ratios(table: dict[str, dict[str, float]]) -> str:
    others = sorted({name for row in table.values() for name in row})
    if not others:
        return f"(no ratios: {OURS} and at least one other target must both succeed)"
    width = max(len(n) for n in table)
    header = f"{'query':<{width}} " + " ".join(f"{OURS + '/' + o:>16}" for o in others)
    lines = [
        f"{OURS}'s median time over each other target's (<1 means {OURS} is faster)",
        header,
        "-" * len(header),
    ]
    for name, row in table.items():
        cells = " ".join(f"{row[o]:>16.2f}" if o in row else f"{'-':>16}" for o in others)
        lines.append(f"{name:<{width}} {cells}")
    return "\n".join(lines)


def check_prerequisites(names: Sequence[str]) -> None:
    for program in ("storescu", "echoscu", "findscu"):
        require_binary(program)
    for name in names:
        if name not in TARGETS:
            raise BenchError(f"unknown target {name!r}; expected some of {', '.join(TARGETS)}")
    if "pypacs" in names:
        require_pypacs()
    if "orthanc" in names:
        require_binary("Orthanc", "orthanc")
    if "dcmqrscp" in names:
        require_binary("dcmqrscp")


def new_target(name: str, studies: int) -> Target:
    if name == DcmqrscpTarget.name:
        return DcmqrscpTarget(max_studies=studies)  # asks for all; it caps the quota itself
    if name == OrthancTarget.name:
        # Orthanc refuses C-FIND from an AE missing from DicomModalities (its default
        # DicomAlwaysAllowFind is false): declare the bench's client, as a user would.
        return OrthancTarget(peers=[Peer(BENCH_AE, free_port())])
    return make_target(name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000, help="studies (10000)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query (7)")
    parser.add_argument(
        "--associations",
        type=int,
        default=4,
        help="parallel storescu for loading (4); dcmqrscp always gets 1, it loses instances "
        "when several associations store at once",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder for the generated corpora"
    )
    parser.add_argument("--keep", action="store_true", help="keep the targets' work folders")
    return parser


def prepare(args: argparse.Namespace) -> StudyCorpus:
    started = time.perf_counter()
    corpus = generate_studies(StudyLayout(args.studies), args.data / f"studies-{args.studies}")
    log(
        f"corpus: {len(corpus.studies)} studies, "
        f"{len({s.patient_id for s in corpus.studies})} patients, {corpus.count} instances, "
        f"{corpus.dataset_bytes / 1e6:.1f} MB ({time.perf_counter() - started:.1f} s)"
    )
    return corpus


def report(
    args: argparse.Namespace,
    names: Sequence[str],
    runs: Sequence[TargetRun],
    corpus: StudyCorpus,
) -> Path:
    table = ratios(runs)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"find-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "benchmark": "find",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": tool_versions(names, "findscu"),
        "params": {
            "studies": args.studies,
            "repeat": args.repeat,
            "associations": args.associations,
            "instances": corpus.count,
            "patients": len({s.patient_id for s in corpus.studies}),
        },
        "runs": [r.as_json() for r in runs],
        "ratios_median_time": table,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    check_prerequisites(names)
    if args.studies < 2 or args.repeat < 1 or args.associations < 1:
        raise BenchError("--studies must be at least 2, --repeat and --associations positive")
    corpus = prepare(args)
    queries = build_queries(corpus)
    work = Path(tempfile.mkdtemp(prefix="pypacs-bench-find-"))
    runs: list[TargetRun] = []
    try:
        for name in names:
            target = new_target(name, len(corpus.studies))
            if name == DcmqrscpTarget.name:  # one association: it loses instances with more
                plan = load_plan(corpus, 1, DcmqrscpTarget.MAX_STUDIES)
            else:
                plan = load_plan(corpus, args.associations)
            log(f"{name}: loading {plan.studies} studies with {len(plan.folders)} storescu ...")
            result = run_target(target, corpus, plan, queries, args.repeat, work / name)
            if result.error:
                log(f"  FAILED: {result.error}")
            runs.append(result)
            if not args.keep:
                shutil.rmtree(work / name, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"C-FIND, {len(corpus.studies)} studies, {corpus.count} instances; median of "
        f"{args.repeat} runs of the whole client process (ms) and responses counted"
    )
    for r in runs:
        print(
            f"{r.target}: loaded {r.stored}/{r.sent} instances in {r.load_seconds:.1f} s "
            f"with {r.associations} storescu" + (f"; FAILED: {r.error}" if r.error else "")
        )
        for note in r.notes:
            print(f"  note: {note}")
    print()
    print(format_table(runs, queries, corpus))
    print()
    print(format_ratios(ratios(runs)))
    path = report(args, names, runs, corpus)
    print(f"\nresults: {path}" + (f"; work folders kept in {work}" if args.keep else ""))
    return 1 if any(r.error for r in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"find: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
