"""The web page benchmark (bench/page.py) in short: 150 studies imported, every scenario once
in headless Chromium, each list it timed checked by the benchmark itself (the totals it
shows, the next page); its figures written as JSON; its command line refusing wrong values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
SCENARIOS = {"search all", "search name smi", "search all by date, newest first", "next page"}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "page.py", *args],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_every_scenario_timed_on_a_small_archive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = bench(
        *("--studies", "150", "--repeat", "2"),
        *("--data", str(tmp_path / "data"), "--out", str(out)),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads((out / "page.json").read_text())
    assert (document["studies"], document["repeat"]) == (150, 2)
    assert set(document["times_ms"]) == SCENARIOS
    for name, times in document["times_ms"].items():
        assert len(times) == 2, name
        for t in times:
            assert 0 < t["shown"] <= t["painted"], (name, t)
    assert set(document["medians_ms"]) == SCENARIOS
    assert "imported 150 instances" in run.stderr
    assert "next page: click to list shown median " in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--studies", "350"], "--studies 350: more than --repeat (7) pages of 50 needed"),
        (["--studies", "x"], "--studies: invalid int value: 'x'"),
        (["--repeat", "0"], "--repeat 0: at least 1"),
    ],
)
def test_wrong_arguments_are_refused(args: list[str], message: str) -> None:
    run = bench(*args)
    assert run.returncode == 2
    assert message in run.stderr
