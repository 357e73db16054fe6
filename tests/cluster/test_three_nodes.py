"""Three pypacs nodes over one PostgreSQL index and one object store (moto_server): twenty
DCMTK senders store the same 50-instance study five times each, spread over the nodes and
at the same time. The archive ends with one patient, one study, its three series and 50
instances with the right derived counts, one object per instance; C-FIND (findscu) and
QIDO-RS answer the same through every node; a job started through one node is followed
to its end through another."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from dicomgen import Spec, series_uid, study_uid, write
from helpers import assert_counts_consistent, index_counts, index_rows, wait_for
from s3 import Moto
from serving import RunningServer

# (series number, modality, instances): 50 instances in three series, two modalities.
SERIES = ((1, "CT", 20), (2, "MR", 20), (3, "CT", 10))
INSTANCES = sum(n for _, _, n in SERIES)
SENDERS, ROUNDS, AT_ONCE = 20, 5, 6
PREFIX = "cluster"
PATIENT = "TRIO"
STUDY = study_uid(PATIENT, 1)


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "study"
    folder.mkdir()
    return [
        write(Spec(PATIENT, "Three^Nodes", 1, series, i, modality=modality), folder)
        for series, modality, count in SERIES
        for i in range(1, count + 1)
    ]


@pytest.fixture
def nodes(
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
    pg_url: str,
    moto: Moto,
    s3_env: dict[str, str],
    storescp: tuple[int, Path],
) -> Iterator[list[RunningServer]]:
    bucket = moto.new_bucket()
    config = tmp_path / "pypacs.toml"
    config.write_text(
        f'[remotes.dest]\nae_title = "STORESCP"\nhost = "127.0.0.1"\nport = {storescp[0]}\n'
    )
    flags = (
        "--config",
        str(config),
        "--database-url",
        pg_url,
        "--storage-url",
        f"s3://{bucket}/{PREFIX}",
        "--s3-endpoint-url",
        moto.endpoint,
    )
    # One after the other: the first creates the schema, the others find it made.
    started = [server_factory(*flags, data=tmp_path / f"node{n}") for n in range(3)]
    started[0].extra.append(bucket)  # for the test to find the bucket
    yield started


def storescu(port: int, files: list[Path]) -> list[str]:
    """Send ``files`` over one association; the status text of every response."""
    done = subprocess.run(
        ["storescu", "-v", "-aec", "PYPACS", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.findall(r"Received Store Response \(([^)]*)\)", done.stdout + done.stderr)


def findscu(port: int, folder: Path, level: str, *keys: str) -> list[dict[str, str]]:
    """C-FIND at ``level`` (Study Root) with DCMTK; each response's keys as text, sorted."""
    folder.mkdir(parents=True)
    args = ["findscu", "-S", "-aec", "PYPACS", "-X", "-od", str(folder)]
    args += ["-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answers = []
    for path in sorted(folder.glob("rsp*.dcm")):
        ds = dcmread(path)
        answers.append({elem.keyword: str(elem.value) for elem in ds if elem.keyword})
    return sorted(answers, key=repr)


def qido(node: RunningServer, path: str) -> list[dict[str, Any]]:
    """A QIDO-RS answer, its objects in a stable order; the Retrieve URL (0008,1190), which
    names the node asked, checked and left out."""
    base = f"http://127.0.0.1:{node.http_port}/dicom-web/"
    got = httpx.get(base + path, timeout=60)
    assert got.status_code == 200, got.text
    body: list[dict[str, Any]] = got.json()
    for item in body:
        assert item.pop("00081190")["Value"][0].startswith(base + "studies/")
    return sorted(body, key=repr)


STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "ModalitiesInStudy",
)
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances")


def test_three_nodes_store_the_same_study_at_once_and_answer_alike(
    nodes: list[RunningServer],
    study_files: list[Path],
    moto: Moto,
    pg_url: str,
    storescp: tuple[int, Path],
    tmp_path: Path,
) -> None:
    # Sender s's round r goes through node (s + r) mod 3: every node receives every
    # instance many times, some at the same moment as the others.
    sends = [nodes[(s + r) % 3].dicom_port for r in range(ROUNDS) for s in range(SENDERS)]
    began = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(lambda port: storescu(port, study_files), sends))
    print(f"{len(sends) * INSTANCES} C-STOREs in {time.monotonic() - began:.1f} s")
    assert [len(a) for a in answers] == [INSTANCES] * len(sends)
    assert set(itertools.chain.from_iterable(answers)) == {"Success"}

    # The index: one of each, counts derived right.
    assert index_counts(pg_url) == {"patient": 1, "study": 1, "series": 3, "instance": 50}
    assert_counts_consistent(pg_url)
    [study] = index_rows(pg_url, "study")
    assert (study["num_series"], study["num_instances"]) == (3, 50)
    assert study["modalities_in_study"] == "CT\\MR"
    # One object per instance, the one its row names: every duplicate's copy was removed.
    bucket = nodes[0].extra[-1]
    keys = {f"{PREFIX}/{row['blob_key']}" for row in index_rows(pg_url, "instance")}
    assert set(moto.objects(bucket)) == keys

    # C-FIND and QIDO-RS through every node: the same full answers, and the right ones.
    finds = []
    for n, node in enumerate(nodes):
        studies = findscu(node.dicom_port, tmp_path / f"f{n}s", "STUDY", *STUDY_KEYS)
        series = findscu(
            node.dicom_port,
            tmp_path / f"f{n}r",
            "SERIES",
            f"StudyInstanceUID={STUDY}",
            *SERIES_KEYS,
        )
        images = [
            answer
            for number, _, _ in SERIES
            for answer in findscu(
                node.dicom_port,
                tmp_path / f"f{n}i{number}",
                "IMAGE",
                f"StudyInstanceUID={STUDY}",
                f"SeriesInstanceUID={series_uid(PATIENT, 1, number)}",
                "SOPInstanceUID",
                "InstanceNumber",
            )
        ]
        finds.append((studies, series, images))
    assert finds[1] == finds[0] and finds[2] == finds[0]
    studies, series, images = finds[0]
    assert len(studies) == 1
    assert (
        studies[0]["StudyInstanceUID"],
        studies[0]["NumberOfStudyRelatedSeries"],
        studies[0]["NumberOfStudyRelatedInstances"],
        studies[0]["ModalitiesInStudy"],
    ) == (STUDY, "3", "50", "['CT', 'MR']")
    assert sorted(
        (s["SeriesNumber"], s["Modality"], s["NumberOfSeriesRelatedInstances"]) for s in series
    ) == [("1", "CT", "20"), ("2", "MR", "20"), ("3", "CT", "10")]
    assert len(images) == 50
    assert {i["SOPInstanceUID"] for i in images} == {p.stem for p in study_files}

    fields = "includefield=NumberOfStudyRelatedSeries&includefield=NumberOfStudyRelatedInstances"
    queries = (
        f"studies?{fields}&includefield=ModalitiesInStudy",
        f"studies/{STUDY}/series?includefield=NumberOfSeriesRelatedInstances",
        f"studies/{STUDY}/instances",
    )
    answered = [[qido(node, q) for q in queries] for node in nodes]
    assert answered[1] == answered[0] and answered[2] == answered[0]
    qido_studies, qido_series, qido_instances = answered[0]
    [one] = qido_studies
    assert one["00201206"]["Value"] == [3]  # NumberOfStudyRelatedSeries
    assert one["00201208"]["Value"] == [50]  # NumberOfStudyRelatedInstances
    assert one["00080061"]["Value"] == ["CT", "MR"]  # ModalitiesInStudy
    assert sorted(s["00201209"]["Value"][0] for s in qido_series) == [10, 20, 20]
    assert len(qido_instances) == 50

    # A job started through node 0, followed to its end through node 2.
    first, last = (f"http://127.0.0.1:{n.http_port}" for n in (nodes[0], nodes[2]))
    started = httpx.post(
        f"{first}/api/remotes/dest/move", json={"StudyInstanceUID": STUDY}, timeout=60
    )
    assert started.status_code == 202, started.text
    job = started.json()["job"]

    def finished() -> dict[str, Any] | None:
        seen: dict[str, Any] = httpx.get(f"{last}/api/jobs/{job}", timeout=30).json()
        return seen if seen["state"] not in ("queued", "running") else None

    final = wait_for(finished, timeout=120, what="the job to finish, seen through node 2")
    assert (final["state"], final["completed"], final["failed"], final["remaining"]) == (
        "done",
        50,
        0,
        0,
    )
    received = {dcmread(p).SOPInstanceUID for p in storescp[1].iterdir()}
    assert received == {p.stem for p in study_files}
