"""The soak benchmark (bench/soak.py) in short: every kind of request at once for half a
minute; no request fails, memory stops growing after warm-up, and once the load stops the
threads and descriptors left are what pools keep, not one per request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def test_mixed_load_leaves_no_trace(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    run = subprocess.run(
        [sys.executable, "soak.py", "--minutes", "0.4", "--interval", "2", "--out", str(out)],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "soak.json").read_text())
    requests = result["requests"]
    loops = {"store", "find", "get", "qido", "wado", "stow", "rendered"}
    assert set(requests) == loops, requests  # each loop ran, and no "... failed" key
    assert all(n > 0 for n in requests.values())
    # Generous bounds: warm-up (imports, caches) is over after the first quarter.
    assert result["rss_mib"]["last_quarter"] < 1.3 * result["rss_mib"]["first_quarter"]
    # Thousands of requests ran: a descriptor or thread kept per request would show in the
    # hundreds. What stays is bounded by pools (index connections: the database, its log
    # and shared memory files each; the HTTP thread pool), made on first use.
    start, after = result["start"], result["after_load"]
    assert sum(requests.values()) > 500
    assert after["descriptors"] <= start["descriptors"] + 24, (start, after)
    assert after["threads"] <= start["threads"] + 12, (start, after)
    rows = (out / "soak.csv").read_text().splitlines()
    assert rows[0] == "seconds,rss_mib,threads,descriptors" and len(rows) >= 10
    assert (out / "soak.svg").read_text().startswith("<svg")
