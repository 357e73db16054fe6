"""DELETE of studies, series and instances over real HTTP, on SQLite and PostgreSQL: index
rows and blobs go together, C-FIND counts and derived attributes stay right, `pypacs check`
finds nothing wrong, and a crash between the index commit and the blob removals brings
nothing back."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from dicomgen import Spec, series_uid, sop_uid, study_uid, write
from dicomweb import CONTENT_TYPE, assert_error, base, multipart, stored
from findfixtures import find
from helpers import (
    assert_counts_consistent,
    blob_files,
    index_counts,
    index_rows,
    pg_database,
    startup_check,
    wait_for,
)
from serving import RunningServer

TREE = {  # (patient, study, series): (modality, instances)
    ("PAT1", 1, 1): ("CT", 3),
    ("PAT1", 1, 2): ("MR", 2),
    ("PAT1", 2, 1): ("CT", 2),
    ("PAT2", 1, 1): ("MR", 1),
}


class Pacs:
    """A running server and the URL of its index."""

    def __init__(self, server: RunningServer, database_url: str) -> None:
        self.server = server
        self.url = database_url

    def delete(self, *uids: str) -> httpx.Response:
        path = "".join(
            f"/{level}/{u}"
            for level, u in zip(("studies", "series", "instances"), uids, strict=False)
        )
        return httpx.delete(base(self.server) + path, timeout=60)

    def instances(self) -> set[str]:
        return {r["sop_instance_uid"] for r in index_rows(self.url, "instance")}

    def blob_keys(self) -> set[str]:
        return {
            str(p.relative_to(self.server.data / "blobs")) for p in blob_files(self.server.data)
        }


def fill(pacs: Pacs, folder: Path, expect: int = 200) -> None:
    files = [
        write(Spec(patient, f"{patient}^Name", study, series, inst, modality=modality), folder)
        for (patient, study, series), (modality, count) in TREE.items()
        for inst in range(1, count + 1)
    ]
    response = httpx.post(
        base(pacs.server) + "/studies",
        content=multipart([f.read_bytes() for f in files]),
        headers={"Content-Type": CONTENT_TYPE},
        timeout=60,
    )
    assert response.status_code == expect, response.text


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def pacs(request: pytest.FixtureRequest, server_factory: Any, tmp_path: Path) -> Iterator[Pacs]:
    if request.param == "sqlite":
        srv: RunningServer = server_factory()
        yield Pacs(srv, srv.database_url)
        return
    database = pg_database()
    url = next(database)
    srv = server_factory("--database-url", url)
    try:
        yield Pacs(srv, url)
    finally:
        srv.kill()
        next(database, None)


def assert_consistent(pacs: Pacs) -> None:
    """Derived values are what the rows say; rows and blob files match one to one."""
    assert_counts_consistent(pacs.url)
    series = index_rows(pacs.url, "series")
    for study in index_rows(pacs.url, "study"):
        modalities = sorted({s["modality"] for s in series if s["study_pk"] == study["pk"]})
        assert study["modalities_in_study"] == "\\".join(modalities)
    assert pacs.blob_keys() == {r["blob_key"] for r in index_rows(pacs.url, "instance")}
    assert index_rows(pacs.url, "blob_deletion") == []


def c_find_studies(pacs: Pacs, patient: str) -> dict[str, tuple[int, int, str]]:
    """Study Instance UID → (series, instances, ModalitiesInStudy), as C-FIND answers."""
    answer = find(
        pacs.server.dicom_port,
        {
            "PatientID": patient,
            "StudyInstanceUID": "",
            "NumberOfStudyRelatedSeries": "",
            "NumberOfStudyRelatedInstances": "",
            "ModalitiesInStudy": "",
        },
    )
    assert answer.status == 0
    return {
        str(r.StudyInstanceUID): (
            int(r.NumberOfStudyRelatedSeries),
            int(r.NumberOfStudyRelatedInstances),
            "\\".join(r.ModalitiesInStudy)
            if isinstance(r.ModalitiesInStudy, pydicom.multival.MultiValue)
            else str(r.ModalitiesInStudy),
        )
        for r in answer.responses
    }


def pypacs_check(pacs: Pacs) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pypacs",
            "check",
            "--no-repair",
            "--data",
            str(pacs.server.data),
            "--database-url",
            pacs.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_delete_instance_series_study(pacs: Pacs, tmp_path: Path) -> None:
    fill(pacs, tmp_path)
    s1, s2 = study_uid("PAT1", 1), study_uid("PAT1", 2)
    assert c_find_studies(pacs, "PAT1") == {s1: (2, 5, "CT\\MR"), s2: (1, 2, "CT")}

    gone = sop_uid("PAT1", 1, 1, 2)
    key = next(
        r["blob_key"] for r in index_rows(pacs.url, "instance") if r["sop_instance_uid"] == gone
    )
    response = pacs.delete(s1, series_uid("PAT1", 1, 1), gone)
    assert (response.status_code, response.content) == (204, b"")
    assert gone not in pacs.instances() and key not in pacs.blob_keys()
    assert c_find_studies(pacs, "PAT1") == {s1: (2, 4, "CT\\MR"), s2: (1, 2, "CT")}
    assert_consistent(pacs)

    # The whole MR series: the study's modalities lose MR.
    assert pacs.delete(s1, series_uid("PAT1", 1, 2)).status_code == 204
    assert c_find_studies(pacs, "PAT1") == {s1: (1, 2, "CT"), s2: (1, 2, "CT")}
    (patient, _) = index_rows(pacs.url, "patient")
    assert (patient["num_studies"], patient["num_series"], patient["num_instances"]) == (2, 2, 4)
    assert_consistent(pacs)

    # A study through dicomweb-client; then the patient's last study takes the patient along.
    DICOMwebClient(base(pacs.server)).delete_study(s1)
    assert c_find_studies(pacs, "PAT1") == {s2: (1, 2, "CT")}
    assert_consistent(pacs)
    assert pacs.delete(s2).status_code == 204
    assert c_find_studies(pacs, "PAT1") == {}
    assert [p["patient_id"] for p in index_rows(pacs.url, "patient")] == ["PAT2"]
    assert pacs.instances() == {sop_uid("PAT2", 1, 1, 1)}
    assert_consistent(pacs)
    assert "0 missing" in pypacs_check(pacs)

    # Deleted instances can be stored again (PAT2's is there: a warning for it, hence 202).
    fill(pacs, tmp_path, expect=202)
    assert index_counts(pacs.url)["instance"] == 8
    assert_consistent(pacs)


def test_unknown_entities_are_404_and_malformed_uids_400(pacs: Pacs, tmp_path: Path) -> None:
    fill(pacs, tmp_path)
    before = index_counts(pacs.url)
    s1, s2 = study_uid("PAT1", 1), study_uid("PAT1", 2)
    for uids, message in (
        (("1.2.3.9",), "study 1.2.3.9 is not in the archive"),
        ((s1, "1.2.3.9"), f"series 1.2.3.9 of study {s1} is not in the archive"),
        ((s1, series_uid("PAT1", 1, 1), "1.2.3.9"), "instance 1.2.3.9 of series"),
        # A series or an instance named under another parent is not there.
        ((s2, series_uid("PAT1", 1, 1)), "is not in the archive"),
        ((s1, series_uid("PAT1", 1, 2), sop_uid("PAT1", 1, 1, 1)), "is not in the archive"),
    ):
        assert message in assert_error(pacs.delete(*uids), 404, "not-found", None)
    for uids, parameter in (
        (("1.2.x!",), "study"),
        ((s1, "1.2!2"), "series"),
        ((s1, series_uid("PAT1", 1, 1), "9" * 65), "instance"),
    ):
        assert "not a UID" in assert_error(pacs.delete(*uids), 400, "bad-parameter", parameter)
    assert index_counts(pacs.url) == before
    assert_consistent(pacs)


def commit_delete_without_removing_blobs(pacs: Pacs, study: str) -> list[str]:
    """What a server killed right after a delete's index commit leaves: the rows gone, the
    blobs still there (index/deletes.py step 1 only)."""
    code = (
        "import sys\n"
        "from pypacs.archive import Archive, ArchiveOptions\n"
        "from pypacs.index import deletes, tx\n"
        "arc = Archive.open(ArchiveOptions(sys.argv[1], sys.argv[2], False, '', 0, 0))\n"
        "removed = tx.write(arc.engine, lambda c: deletes.delete_entity(c, sys.argv[3]))\n"
        "arc.close()\n"
        "print(' '.join(removed.blob_keys))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, pacs.url, str(pacs.server.data / "blobs"), study],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_a_delete_cut_short_is_finished_at_start_up(
    pacs: Pacs, server_factory: Any, tmp_path: Path
) -> None:
    fill(pacs, tmp_path)
    study = study_uid("PAT1", 1)
    pacs.server.kill()
    left = commit_delete_without_removing_blobs(pacs, study)
    assert len(left) == 5 and set(left) <= pacs.blob_keys()

    flags = [] if pacs.url.startswith("sqlite") else ["--database-url", pacs.url]
    restarted = Pacs(server_factory(*flags, data=pacs.server.data), pacs.url)
    check = startup_check(restarted.server.log())
    assert (check["reindexed"], check["missing"], check["unreadable"]) == (0, 0, 0)
    assert "finished the removal of 5 blobs of deleted instances" in restarted.server.log()
    assert not {sop_uid("PAT1", 1, s, i) for s in (1, 2) for i in (1, 2, 3)} & restarted.instances()
    assert c_find_studies(restarted, "PAT1") == {study_uid("PAT1", 2): (1, 2, "CT")}
    assert_consistent(restarted)


def test_sigkill_during_a_delete_never_resurrects_nor_loses_blobs(
    server_factory: Any, tmp_path: Path
) -> None:
    srv: RunningServer = server_factory()
    pacs = Pacs(srv, srv.database_url)
    files = [
        write(Spec("BIGDEL", "Big^Delete", 1, 1 + i // 100, i, rows=4), tmp_path)
        for i in range(400)
    ]
    for start in range(0, len(files), 100):
        body = multipart([f.read_bytes() for f in files[start : start + 100]])
        response = httpx.post(
            base(srv) + "/studies", content=body, headers={"Content-Type": CONTENT_TYPE}, timeout=60
        )
        assert response.status_code == 200, response.text
    kept = write(Spec("KEPT", "Kept^Patient", 1, 1, 1), tmp_path).read_bytes()
    assert (
        httpx.post(
            base(srv) + "/studies",
            content=multipart([kept]),
            headers={"Content-Type": CONTENT_TYPE},
        ).status_code
        == 200
    )
    study = study_uid("BIGDEL", 1)

    outcome: list[object] = []

    def delete() -> None:
        try:
            outcome.append(pacs.delete(study).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    deleter = threading.Thread(target=delete)
    deleter.start()
    # Kill as soon as the index commit has removed the rows: blob removals are under way.
    wait_for(lambda: index_counts(pacs.url)["instance"] < 401, timeout=60, what="the commit")
    srv.kill()
    deleter.join(timeout=30)
    left_on_disk = len(blob_files(srv.data)) - 1

    restarted = Pacs(server_factory(data=srv.data), srv.database_url)
    check = startup_check(restarted.server.log())
    assert (check["reindexed"], check["missing"], check["unreadable"]) == (0, 0, 0)
    # The delete committed, so the study is gone for good, however many blobs the kill left.
    assert restarted.instances() == {pydicom.dcmread(BytesIO(kept)).SOPInstanceUID}
    assert stored(restarted.server)[str(pydicom.dcmread(BytesIO(kept)).SOPInstanceUID)] == kept
    assert_consistent(restarted)
    assert len(blob_files(restarted.server.data)) == 1  # only the kept instance's
    if left_on_disk:  # the kill left blobs behind: start-up finished their removal
        assert "finished the removal of 400 blobs of deleted instances" in restarted.server.log()
