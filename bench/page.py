"""Web page benchmark: how soon the studies list shows on a 10,000-study archive.

    .venv/bin/python bench/page.py [--studies 10000] [--repeat 7] [--data DIR] [--out DIR]

Generates the study-level corpus of ``data.py`` (kept under ``--data/studies-N-page``, reused),
loads it into a fresh archive with ``pypacs import``, starts ``pypacs serve`` on it, opens the
web page in headless Chromium (Playwright) and, ``--repeat`` times each, clicks:

- Search with an empty form (every study: the first page of 50 and the total),
- Search for patient name ``smi`` (the SMITH and SMITHSON studies),
- Search sorted by study date, newest first,
- Next page, from the first page of every study onwards.

Each time is taken in the page, from the click event to the ``pypacs-studies-shown`` mark
lists.js sets once the rows and the status are in the document, and to the next animation
frame after it (painted). Prints the medians and writes every time as JSON into ``--out``.
Figures move with the machine's load; no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from data import StudyCorpus, StudyLayout, generate_studies
from targets import HOST, PypacsTarget, log

CHROMIUM = "/usr/bin/chromium"
PAGE_SIZE = 50  # lists.js
PYPACS = (sys.executable, "-m", "pypacs")

# In the page: the click's time, then the mark's and the next frame's, per shown list.
INSTRUMENT = """() => {
  window.bench = { clicked: null, times: [] };
  document.addEventListener("click", () => { window.bench.clicked = performance.now(); }, true);
  new PerformanceObserver((entries) => {
    for (const mark of entries.getEntriesByName("pypacs-studies-shown")) {
      const clicked = window.bench.clicked;
      if (clicked === null) continue;
      window.bench.clicked = null;
      requestAnimationFrame(() => window.bench.times.push(
        { shown: mark.startTime - clicked, painted: performance.now() - clicked }));
    }
  }).observe({ type: "mark" });
}"""


def timed_click(page: Page, selector: str) -> dict[str, float]:
    """Click ``selector`` and wait for the studies list it brings; its times in ms."""
    before: int = page.evaluate("() => window.bench.times.length")
    page.click(selector)
    page.wait_for_function("(n) => window.bench.times.length > n", arg=before)
    times: dict[str, float] = page.evaluate("() => window.bench.times.at(-1)")
    return times


def shown_count(page: Page) -> int:
    count: int = page.evaluate("() => performance.getEntriesByName('pypacs-studies-shown').length")
    return count


def navigate(page: Page, address: str) -> None:
    """Show the studies list at ``address`` (untimed), unless it is shown already."""
    if "#" + page.url.partition("#")[2] == address:
        return
    before = shown_count(page)
    page.evaluate("(address) => { location.hash = address; }", address)
    page.wait_for_function(
        "(n) => performance.getEntriesByName('pypacs-studies-shown').length > n", arg=before
    )


def search(page: Page, name: str = "", sort: str = "") -> dict[str, float]:
    """Search from the form for ``name`` (the list sorted by ``sort``); its times in ms."""
    navigate(page, f"#/studies?sort={sort}" if sort else "#/studies")
    page.fill("#patient-name", name)
    return timed_click(page, "#search-button")


def status_for(count: int) -> str:
    """What lists.js says of the first page of ``count`` studies."""
    if count == 0:
        return "No study found."
    if count <= PAGE_SIZE:
        return f"{count} {'study' if count == 1 else 'studies'} found."
    return f"Showing 1\N{EN DASH}{PAGE_SIZE} of {count} studies."


def run(http_port: int, repeat: int, corpus: StudyCorpus) -> dict[str, list[dict[str, float]]]:
    """Each scenario ``repeat`` times; every list shown checked against the corpus."""
    studies = len(corpus.studies)
    smi = sum(s.patient_name.startswith("SMI") for s in corpus.studies)
    scenarios: dict[str, list[dict[str, float]]] = {
        "search all": [],
        "search name smi": [],
        "search all by date, newest first": [],
        "next page": [],
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://{HOST}:{http_port}/#/studies")
            page.wait_for_function("() => document.body.dataset.ready === 'true'")
            page.evaluate(INSTRUMENT)
            search(page)  # a first search warms the server's caches; not counted
            for _ in range(repeat):
                scenarios["search all"].append(search(page))
                status = page.inner_text("#studies-status")
                assert status == status_for(studies), status
                scenarios["search name smi"].append(search(page, "smi"))
                status = page.inner_text("#studies-status")
                assert status == status_for(smi), status
                scenarios["search all by date, newest first"].append(
                    search(page, sort="-StudyDate")
                )
            search(page)
            for n in range(1, repeat + 1):
                scenarios["next page"].append(timed_click(page, "#studies-next"))
                status = page.inner_text("#studies-status")
                assert status.startswith(f"Showing {n * PAGE_SIZE + 1}\N{EN DASH}"), status
        finally:
            browser.close()
    return scenarios


def load(corpus_dir: Path, data: Path) -> float:
    """``pypacs import`` of the corpus into a new archive; the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [*PYPACS, "import", "--no-progress", "--create", "--data", str(data), str(corpus_dir)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYPACS_CONFIG"},
    )
    if done.returncode != 0:
        raise SystemExit(f"pypacs import failed: {done.stderr}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "pypacs-bench-data"
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pypacs-bench")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1")
    if args.studies <= args.repeat * PAGE_SIZE:
        # Next page is pressed --repeat times from the first page: each must show a page.
        parser.error(
            f"--studies {args.studies}: more than --repeat ({args.repeat}) pages of "
            f"{PAGE_SIZE} needed, at least {args.repeat * PAGE_SIZE + 1}"
        )
    log(f"corpus of {args.studies} studies under {args.data}")
    corpus = generate_studies(
        StudyLayout(args.studies, big_series=1), args.data / f"studies-{args.studies}-page"
    )
    with tempfile.TemporaryDirectory(prefix="pypacs-page-bench-") as tmp:
        work = Path(tmp)
        log("importing")
        archive = work / "archive"
        seconds = load(corpus.dicom_dir, archive)
        log(f"imported {corpus.count} instances in {seconds:.0f} s")
        # The target serves the imported archive: its flags' last --data wins.
        flags = os.environ.get("PYPACS_BENCH_FLAGS", "")
        os.environ["PYPACS_BENCH_FLAGS"] = f"{flags} --data {shlex.quote(str(archive))}"
        target = PypacsTarget()
        with target.running(work / "serve"):
            scenarios = run(target.http_port, args.repeat, corpus)
    result: dict[str, Any] = {
        "studies": args.studies,
        "repeat": args.repeat,
        "medians_ms": {
            name: {
                "shown": statistics.median(t["shown"] for t in times),
                "painted": statistics.median(t["painted"] for t in times),
            }
            for name, times in scenarios.items()
        },
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    for name, median in result["medians_ms"].items():
        print(
            f"{name}: click to list shown median {median['shown']:.0f} ms, "
            f"painted {median['painted']:.0f} ms"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "page.json").write_text(json.dumps({**result, "times_ms": scenarios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
