"""examples/cluster as documented: start.sh brings up three nodes, moto_server and haproxy
(here on free ports), DCMTK and QIDO-RS work through haproxy's two ports, every node
answers alike, and stop.sh stops them all."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomgen import Spec, write
from helpers import PG_ADMIN_URL
from qrscp import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster"
PORTS = (
    "DICOM_PORT",
    "HTTP_PORT",
    "S3_PORT",
    *(f"NODE{n}_{kind}_PORT" for n in (1, 2, 3) for kind in ("DICOM", "HTTP")),
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "PG": PG_ADMIN_URL.rsplit("/", 1)[0],
        "DB_NAME": "pypacs_example_" + secrets.token_hex(4),
        **{name: str(free_port()) for name in PORTS},
    }
    env.pop("PYPACS_CONFIG", None)
    try:
        started = subprocess.run(
            [str(EXAMPLE / "start.sh")], env=env, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"DICOM  127.0.0.1:{env['DICOM_PORT']}" in started.stdout
        yield env
    finally:
        stopped = subprocess.run(
            [str(EXAMPLE / "stop.sh")],
            env={**env, "DROP": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_example_cluster_stores_and_answers_through_haproxy(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    front = cluster["DICOM_PORT"]
    echo = subprocess.run(
        ["echoscu", "-aec", "PYPACS", "127.0.0.1", front], capture_output=True, timeout=60
    )
    assert echo.returncode == 0, echo.stderr
    files = [write(Spec("HAPX", "Via^Haproxy", 1, 1, i), tmp_path) for i in range(1, 6)]
    for _ in range(3):  # three associations: leastconn spreads them
        sent = subprocess.run(
            ["storescu", "-aec", "PYPACS", "127.0.0.1", front, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
    query = "dicom-web/studies?includefield=NumberOfStudyRelatedInstances"
    through = httpx.get(f"http://127.0.0.1:{cluster['HTTP_PORT']}/{query}", timeout=60)
    assert through.status_code == 200, through.text
    [study] = through.json()
    assert study["00201208"]["Value"] == [5]
    assert study["00100020"]["Value"] == ["HAPX"]
    for n in (1, 2, 3):
        node = httpx.get(f"http://127.0.0.1:{cluster[f'NODE{n}_HTTP_PORT']}/{query}", timeout=60)
        assert node.json() == [
            {**study, "00081190": node.json()[0]["00081190"]}
        ]  # the same but for its own Retrieve URL
    work = Path(cluster["WORK"])
    assert sorted(p.name for p in work.glob("*.pid")) == [
        "haproxy.pid",
        "moto.pid",
        "node1.pid",
        "node2.pid",
        "node3.pid",
    ]
