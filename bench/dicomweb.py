"""DICOMweb benchmark: QIDO-RS, WADO-RS metadata and WADO-RS retrieve, pypacs and Orthanc
(with its DICOMweb plugin) side by side.

    .venv/bin/python bench/dicomweb.py [--studies 1000] [--big-series 600] [--ct 300]
                                       [--repeat 5] [--targets pypacs,orthanc] [--out DIR]

Loads, into each target started fresh, the study-level corpus of bench/find.py (``--studies``
studies; the last one holds a series of ``--big-series`` small instances) and one study of
``--ct`` 512x512 CT instances, all with DCMTK ``storescu``. Then times, over one keep-alive
HTTP connection, median of ``--repeat`` runs after one warm-up:

- QIDO-RS study searches (the study-level queries of bench/find.py, with a limit above the
  number of studies, so nothing is cut by a server default), counting the matches;
- WADO-RS series metadata of the big series, counting the instance objects;
- WADO-RS retrieve of the big study and of the CT study (multipart/related, application/dicom,
  as stored), counting the parts and bytes, reading the whole body.

Prints a table and pypacs' time over each other target's (below 1: pypacs is faster), and
writes everything as JSON into ``--out``. Orthanc runs with its defaults and the plugin's.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread

from clients import store
from data import Layout, StudyLayout, generate, generate_studies
from find import build_queries
from targets import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    HOST,
    BenchError,
    OrthancTarget,
    PypacsTarget,
    Target,
    log,
    require_binary,
    require_pypacs,
    tool_versions,
)

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
BOUNDARY = re.compile(r'boundary="?([^";,]+)"?')


@dataclass
class Timing:
    name: str
    expected: int
    times_ms: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    megabytes: float = 0.0
    error: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else 0.0


@dataclass
class TargetRun:
    target: str
    load_seconds: float = 0.0
    stored: int = 0
    timings: dict[str, Timing] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Request:
    """One timed HTTP request: what it asks, and how its answer is counted."""

    name: str
    path: str
    params: tuple[tuple[str, str], ...]
    accept: str
    expected: int
    count: Callable[[httpx.Response], tuple[int, int]]  # (items, bytes)


def count_json(response: httpx.Response) -> tuple[int, int]:
    if response.status_code == 204:
        return 0, 0
    response.raise_for_status()
    return len(response.json()), len(response.content)


def count_parts(response: httpx.Response) -> tuple[int, int]:
    response.raise_for_status()
    found = BOUNDARY.search(response.headers.get("content-type", ""))
    if found is None:
        raise BenchError(f"no multipart boundary in {response.headers.get('content-type')!r}")
    delimiter = b"--" + found.group(1).encode()
    body = response.content
    # Each part opens with the delimiter; the closing one ends with "--".
    return body.count(delimiter) - 1, len(body)


def requests_for(studies: StudyLayout, corpus: Any, ct_study: str, ct_count: int) -> list[Request]:
    limit = str(studies.studies + 10)
    out: list[Request] = []
    for query in build_queries(corpus):
        if query.level != "STUDY":
            continue
        params = (*query.matching, ("limit", limit))
        # The universal search also finds the CT study.
        extra = 0 if query.matching else 1
        out.append(
            Request(
                f"QIDO {query.name}",
                "/studies",
                params,
                DICOM_JSON,
                query.count(corpus.studies) + extra,
                count_json,
            )
        )
    big = corpus.studies[-1]
    series_path = f"/studies/{big.study_uid}/series/{big.series_uid}"
    out += [
        Request(
            f"series metadata ({big.instances} inst)",
            f"{series_path}/metadata",
            (),
            DICOM_JSON,
            big.instances,
            count_json,
        ),
        Request(
            f"study retrieve ({big.instances} small inst)",
            f"/studies/{big.study_uid}",
            (),
            MULTIPART_DICOM,
            big.instances,
            count_parts,
        ),
        Request(
            f"study retrieve ({ct_count} CT 512x512)",
            f"/studies/{ct_study}",
            (),
            MULTIPART_DICOM,
            ct_count,
            count_parts,
        ),
    ]
    return out


def time_request(client: httpx.Client, root: str, request: Request, repeat: int) -> Timing:
    timing = Timing(request.name, request.expected)
    for run in range(repeat + 1):
        started = time.perf_counter()
        try:
            response = client.get(
                root + request.path, params=request.params, headers={"Accept": request.accept}
            )
            items, size = request.count(response)
        except (httpx.HTTPError, BenchError, ValueError) as exc:
            timing.error = f"{type(exc).__name__}: {exc}"[:300]
            return timing
        elapsed = (time.perf_counter() - started) * 1000
        timing.counts.append(items)
        if run:  # the first run warms caches
            timing.times_ms.append(elapsed)
            timing.megabytes = size / 1e6
    return timing


def new_target(name: str) -> Target:
    if name == "pypacs":
        return PypacsTarget()
    if name == "orthanc":
        if not DICOMWEB_PLUGIN.is_file():
            raise BenchError(f"{DICOMWEB_PLUGIN} missing; apt-get install -y orthanc-dicomweb")
        return OrthancTarget(plugins=[str(DICOMWEB_PLUGIN)])
    raise BenchError(f"unknown target {name!r}; expected pypacs or orthanc")


def run_target(
    name: str, folders: Sequence[Path], requests: Sequence[Request], repeat: int, work: Path
) -> TargetRun:
    run = TargetRun(name)
    try:
        target = new_target(name)
        with target.running(work / "target"):
            started = time.perf_counter()
            sent = store(target.ae_title, target.dicom_port, folders, work / "load")
            run.load_seconds = time.perf_counter() - started
            run.stored = target.stored_count()
            if not sent.ok:
                raise BenchError(f"storescu: {sent.first_error}")
            port = getattr(target, "http_port", 0)
            root = f"http://{HOST}:{port}/dicom-web"
            log(f"  loaded {run.stored} instances in {run.load_seconds:.1f} s")
            with httpx.Client(timeout=600) as client:
                for request in requests:
                    timing = time_request(client, root, request, repeat)
                    run.timings[request.name] = timing
                    log(
                        f"  {request.name}: {timing.median_ms:.1f} ms, "
                        f"{timing.counts[-1] if timing.counts else '-'} of {request.expected}"
                        + (f" ERROR {timing.error}" if timing.error else "")
                    )
    except (BenchError, OSError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    return run


def format_table(runs: Sequence[TargetRun], requests: Sequence[Request]) -> str:
    width = max(len(r.name) for r in requests) + 2
    head = f"{'request':<{width}}" + "".join(f"{r.target:>22}" for r in runs)
    lines = [head, "-" * len(head)]
    for request in requests:
        cells = []
        for run in runs:
            t = run.timings.get(request.name)
            if t is None or t.error or not t.counts:
                cells.append(f"{'error' if t and t.error else '-':>22}")
                continue
            mark = "" if t.counts[-1] == t.expected else "!"
            cells.append(f"{t.median_ms:>11.1f} ms {t.counts[-1]:>6}{mark:1} ")
        lines.append(f"{request.name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def ratios(runs: Sequence[TargetRun]) -> dict[str, dict[str, float]]:
    """pypacs' median time over each other target's: below 1, pypacs is faster."""
    ours = next((r for r in runs if r.target == "pypacs" and not r.error), None)
    table: dict[str, dict[str, float]] = {}
    if ours is None:
        return table
    for other in runs:
        if other is ours or other.error:
            continue
        table[other.target] = {
            name: mine.median_ms / theirs.median_ms
            for name, mine in ours.timings.items()
            if (theirs := other.timings.get(name)) is not None
            and mine.median_ms
            and theirs.median_ms
        }
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000, help="studies in the search corpus")
    parser.add_argument("--big-series", type=int, default=600, help="instances of the big series")
    parser.add_argument("--ct", type=int, default=300, help="CT instances of the retrieve study")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each request")
    parser.add_argument("--targets", default="pypacs,orthanc", help="comma-separated")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus cache folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    return parser


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    if "pypacs" in names:
        require_pypacs()
    require_binary("storescu")
    layout = StudyLayout(args.studies, big_series=args.big_series)
    corpus = generate_studies(layout, args.data / f"studies-{args.studies}-big{args.big_series}")
    ct = generate(
        Layout("ct", args.ct, per_series=-(-args.ct // 2), series_per_study=2),
        args.data / f"retrieve-ct-{args.ct}",
    )
    ct_study = str(dcmread(ct.files[0], stop_before_pixels=True).StudyInstanceUID)
    requests = requests_for(layout, corpus, ct_study, ct.count)
    work = Path(tempfile.mkdtemp(prefix="pypacs-bench-dicomweb-"))
    runs = []
    try:
        for name in names:
            log(f"{name}: loading {corpus.count + ct.count} instances ...")
            runs.append(
                run_target(
                    name, [corpus.dicom_dir, ct.dicom_dir], requests, args.repeat, work / name
                )
            )
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"DICOMweb, {len(corpus.studies)} studies + a {ct.count}-instance CT study; median of "
        f"{args.repeat} runs over one keep-alive connection (ms), and items counted "
        "(! = not what the target holds)"
    )
    for r in runs:
        if r.error:
            print(f"{r.target}: FAILED: {r.error}")
    print(format_table(runs, requests))
    table = ratios(runs)
    for other, values in table.items():
        print(f"\npypacs time / {other} time (below 1: pypacs faster):")
        for name, value in values.items():
            print(f"  {name:<40} {value:6.2f}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"dicomweb-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "dicomweb",
                "when": stamp,
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "versions": tool_versions(names, "storescu"),
                "runs": [asdict(r) for r in runs],
                "ratios": table,
            },
            indent=2,
        )
    )
    print(f"\nresults: {path}")
    return 1 if any(r.error for r in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(_parser().parse_args(argv))
    except BenchError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
