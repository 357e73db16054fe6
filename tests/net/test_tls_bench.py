"""The TLS benchmark (bench/tls.py) in short, on pypacs alone: every instance stored plain and
over TLS, every C-MOVE complete to a plain and a TLS storescp, the echoes over a real TLS
connection; and its command line refusing wrong values with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
INSTANCES = 6


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tls.py", *args],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_plain_and_tls_rows_on_pypacs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = bench(
        *("--ct", str(INSTANCES), "--repeat", "2", "--echo-repeat", "3"),
        *("--targets", "pypacs", "--out", str(out), "--data", str(tmp_path / "data")),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (result,) = out.glob("tls-*.json")
    document = json.loads(result.read_text())
    runs = {(r["target"], r["mode"]): r for r in document["runs"]}
    assert set(runs) == {(t, m) for t in ("storescp", "pypacs") for m in ("plain", "tls")}
    for (target, _mode), r in runs.items():
        assert r["error"] == "", r
        assert r["stored"] == INSTANCES, r
        assert r["store_mb_s"] > 0, r
        if target == "pypacs":
            assert r["move"]["completed"] == [INSTANCES, INSTANCES], r
            assert r["move"]["errors"] == [], r
            assert r["echo_status"] == 0 and len(r["echo_seconds"]) == 3, r
            assert r["move_mb_s"] > 0 and r["echo_ms"] > 0, r
    # The TLS rows went over TLS (1.2 or 1.3), the plain ones did not.
    assert runs["pypacs", "tls"]["negotiated"].startswith("TLSv1."), runs["pypacs", "tls"]
    assert runs["pypacs", "plain"]["negotiated"] == ""
    ratios = document["tls_over_plain_speed"]["pypacs"]
    assert set(ratios) == {"store_mb_s", "echo_ms", "move_mb_s"}
    assert all(isinstance(v, float) and v > 0 for v in ratios.values()), ratios
    assert "C-MOVE of the study to storescp" in run.stdout
    assert "load average" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--targets", "dcmqrscp"), "expected some of pypacs, orthanc"),
        (("--targets", ""), "expected some of pypacs, orthanc"),
        (("--ct", "0"), "0 is not at least 1"),
        (("--repeat", "many"), "'many' is not an integer"),
    ],
)
def test_wrong_arguments(args: tuple[str, ...], message: str) -> None:
    run = bench(*args)
    assert run.returncode == 2
    assert message in run.stderr, run.stderr
