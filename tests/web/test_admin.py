"""The admin REST API against a running pypacs: statistics, remotes from the configuration,
C-ECHO, sending a study to a storage SCP as a job, a study as a ZIP, and the JSON body of
every error path."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomgen import Spec, make_dataset, write_dataset
from helpers import blob_files, blob_path, index_rows, store_files, wait_for
from receiver import Receiver, config_file, free_port, receiver
from serving import RunningServer, start_pypacs

# Two patients; the first has a study of two series (3 + 2 instances), the second a study
# of one instance.
SPECS = (
    *(Spec("ADM-1", "Admin^One", 1, 1, i) for i in (1, 2, 3)),
    *(Spec("ADM-1", "Admin^One", 1, 2, i, modality="MR") for i in (1, 2)),
    Spec("ADM-2", "Admin^Two", 1, 1, 1),
)
DATASETS = tuple(make_dataset(spec) for spec in SPECS)
BIG_STUDY = str(DATASETS[0].StudyInstanceUID)
SMALL_STUDY = str(DATASETS[-1].StudyInstanceUID)
UNKNOWN_STUDY = "1.2.826.0.1.3680043.10.1255.999"
JSON = {"Content-Type": "application/json"}


def uids_of(study: str) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in DATASETS if ds.StudyInstanceUID == study}


@contextmanager
def verification_scp(ae_title: str) -> Iterator[Receiver]:
    """A C-ECHO SCP on a free port (the storage receiver offers storage only)."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None  # block=False returns the running server
    try:
        yield Receiver(port, ae_title)
    finally:
        server.shutdown()


@dataclass
class Setup:
    server: RunningServer
    dest: Receiver
    echoer: Receiver
    closed: Receiver  # declared as a remote, nothing listens on its port
    http: httpx.Client

    def blobs_by_uid(self) -> dict[str, bytes]:
        rows = index_rows(self.server.database_url, "instance")
        return {
            row["sop_instance_uid"]: blob_path(self.server.data, row["blob_key"]).read_bytes()
            for row in rows
        }

    def finished(self, job: str) -> dict[str, Any]:
        def state() -> dict[str, Any] | None:
            body: dict[str, Any] = self.http.get(f"/api/jobs/{job}").json()
            return None if body["state"] in ("queued", "running") else body

        result: dict[str, Any] = wait_for(state, timeout=60, what=f"job {job} to finish")
        return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("admin")
    folder = root / "in"
    folder.mkdir()
    files = [write_dataset(ds, folder) for ds in DATASETS]
    with receiver(ae_title="DEST") as dest, verification_scp("ECHOER") as echoer:
        closed = Receiver(free_port(), "NOBODY")
        config = config_file(root, [dest, echoer, closed])
        srv = start_pypacs(root / "data", "--config", str(config))
        try:
            statuses = store_files(srv.dicom_port, files)
            assert {int(s.Status) for s in statuses.values()} == {0}
            with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as http:
                yield Setup(srv, dest, echoer, closed, http)
        finally:
            srv.kill()


def test_statistics_count_what_was_stored(setup: Setup) -> None:
    response = setup.http.get("/api/statistics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "patients": 2,
        "studies": 2,
        "series": 3,
        "instances": 6,
        "bytes": sum(p.stat().st_size for p in blob_files(setup.server.data)),
    }


def test_remotes_are_the_configured_ones(setup: Setup) -> None:
    assert setup.http.get("/api/remotes").json() == [
        {"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": setup.dest.port},
        {"name": "echoer", "ae_title": "ECHOER", "host": "127.0.0.1", "port": setup.echoer.port},
        {"name": "nobody", "ae_title": "NOBODY", "host": "127.0.0.1", "port": setup.closed.port},
    ]


def test_echo_a_listening_remote(setup: Setup) -> None:
    response = setup.http.post("/api/remotes/echoer/echo", headers=JSON)
    assert response.status_code == 200
    body = response.json()
    milliseconds = body.pop("milliseconds")
    assert body == {"remote": "echoer", "ok": True, "status": "0x0000", "error": None}
    assert isinstance(milliseconds, float)
    assert milliseconds > 0


def test_echo_a_closed_port_says_why(setup: Setup) -> None:
    response = setup.http.post("/api/remotes/nobody/echo", headers=JSON)
    assert response.status_code == 200
    assert response.json() == {
        "remote": "nobody",
        "ok": False,
        "status": None,
        "milliseconds": None,
        "error": f"NOBODY at 127.0.0.1:{setup.closed.port} refused or did not answer",
    }


def test_move_sends_exactly_the_study(setup: Setup) -> None:
    setup.dest.received.clear()
    response = setup.http.post("/api/remotes/dest/move", json={"StudyInstanceUID": BIG_STUDY})
    assert response.status_code == 202
    started = response.json()
    job = started["job"]
    assert response.headers["location"] == f"/api/jobs/{job}"
    assert started["remote"] == "dest"
    assert started["StudyInstanceUID"] == BIG_STUDY
    assert started["error"] is None
    final = setup.finished(job)
    assert final["finished"] is not None
    del final["created"], final["finished"]
    assert final == {
        "job": job,
        "state": "done",
        "remote": "dest",
        "StudyInstanceUID": BIG_STUDY,
        "status": "0x0000",
        "remaining": 0,
        "completed": 5,
        "failed": 0,
        "warning": 0,
        "failed_uids": [],
        "error": None,
    }
    received = setup.dest.by_uid()
    assert len(setup.dest.received) == 5
    assert set(received) == uids_of(BIG_STUDY)
    # pypacs sent the study by C-STORE itself, not as a C-MOVE's sub-operations: the
    # requests name no Move Originator (PS3.7 9.3.1.1).
    assert {r.move_originator for r in received.values()} == {None}
    # Bytes in are bytes out: what arrived is the stored data set.
    blobs = setup.blobs_by_uid()
    for uid, item in received.items():
        assert blobs[uid].endswith(item.data)


def test_move_to_a_closed_port_fails_with_the_reason(setup: Setup) -> None:
    response = setup.http.post("/api/remotes/nobody/move", json={"StudyInstanceUID": SMALL_STUDY})
    assert response.status_code == 202
    job = response.json()["job"]
    final = setup.finished(job)
    del final["created"], final["finished"]
    # PS3.4 C.4.2.1.5: 0xA702, refused: out of resources, unable to perform sub-operations.
    assert final == {
        "job": job,
        "state": "failed",
        "remote": "nobody",
        "StudyInstanceUID": SMALL_STUDY,
        "status": "0xA702",
        "remaining": None,
        "completed": 0,
        "failed": 0,
        "warning": 0,
        "failed_uids": [],
        "error": "the move ended with status 0xA702: "
        f"NOBODY at 127.0.0.1:{setup.closed.port} refused or did not answer",
    }


def test_zip_holds_the_stored_files_as_they_are(setup: Setup) -> None:
    with setup.http.stream("GET", f"/api/studies/{BIG_STUDY}/archive.zip") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == f'attachment; filename="{BIG_STUDY}.zip"'
        assert "content-length" not in response.headers  # streamed
        data = b"".join(response.iter_bytes())
    blobs = setup.blobs_by_uid()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        contents = {name: archive.read(name) for name in names}
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    assert len(names) == 5
    by_uid = {name.split("_", 1)[1].removesuffix(".dcm"): name for name in names}
    assert set(by_uid) == uids_of(BIG_STUDY)
    assert sorted(int(name.split("_", 1)[0]) for name in names) == [1, 2, 3, 4, 5]
    for uid, name in by_uid.items():
        assert contents[name] == blobs[uid]


def test_zip_head_answers_the_headers_only(setup: Setup) -> None:
    response = setup.http.head(f"/api/studies/{BIG_STUDY}/archive.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="{BIG_STUDY}.zip"'
    assert "content-length" not in response.headers
    assert response.content == b""
    assert setup.http.head(f"/api/studies/{UNKNOWN_STUDY}/archive.zip").status_code == 404


def test_zip_of_a_one_instance_study(setup: Setup) -> None:
    response = setup.http.get(f"/api/studies/{SMALL_STUDY}/archive.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        (uid,) = uids_of(SMALL_STUDY)
        assert archive.namelist() == [f"00001_{uid}.dcm"]
        assert archive.read(f"00001_{uid}.dcm") == setup.blobs_by_uid()[uid]


def error(status: int, code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    return {"error": body}


MOVE_URL = "/api/remotes/dest/move"
ERRORS = {
    "echo an unknown remote": (
        "POST",
        "/api/remotes/elsewhere/echo",
        None,
        error(404, "not-found", "unknown remote 'elsewhere' (known: dest, echoer, nobody)"),
    ),
    "move to an unknown remote": (
        "POST",
        "/api/remotes/elsewhere/move",
        b'{"StudyInstanceUID": "1.2.3"}',
        error(404, "not-found", "unknown remote 'elsewhere' (known: dest, echoer, nobody)"),
    ),
    "move body not JSON": (
        "POST",
        MOVE_URL,
        b"StudyInstanceUID=1.2.3",
        error(
            400,
            "bad-parameter",
            "the request body is not JSON: Expecting value: line 1 column 1 (char 0)",
            "body",
        ),
    ),
    "move body not an object": (
        "POST",
        MOVE_URL,
        b'["1.2.3"]',
        error(400, "bad-parameter", 'expected a JSON object {"StudyInstanceUID": "..."}', "body"),
    ),
    "move body without the UID": (
        "POST",
        MOVE_URL,
        b'{"StudyUID": "1.2.3"}',
        error(
            400,
            "bad-parameter",
            "StudyInstanceUID must be given as a string",
            "StudyInstanceUID",
        ),
    ),
    "move UID not a string": (
        "POST",
        MOVE_URL,
        b'{"StudyInstanceUID": 123}',
        error(
            400,
            "bad-parameter",
            "StudyInstanceUID must be given as a string",
            "StudyInstanceUID",
        ),
    ),
    "move UID malformed": (
        "POST",
        MOVE_URL,
        b'{"StudyInstanceUID": "1.2.x!"}',
        error(
            400,
            "bad-parameter",
            "StudyInstanceUID is not a UID: '1.2.x!'",
            "StudyInstanceUID",
        ),
    ),
    "move UID with a wildcard": (
        "POST",
        MOVE_URL,
        b'{"StudyInstanceUID": "1.2.*"}',
        error(
            400,
            "bad-parameter",
            "StudyInstanceUID is not a UID: '1.2.*'",
            "StudyInstanceUID",
        ),
    ),
    "move an unknown study": (
        "POST",
        MOVE_URL,
        f'{{"StudyInstanceUID": "{UNKNOWN_STUDY}"}}'.encode(),
        error(404, "not-found", f"no study {UNKNOWN_STUDY}"),
    ),
    "move body too large": (
        "POST",
        MOVE_URL,
        b" " * 70_000,
        error(413, "too-large", "the request body exceeds 65536 bytes", "body"),
    ),
    "unknown job": (
        "GET",
        "/api/jobs/7-abcdef",
        None,
        error(404, "not-found", "no job '7-abcdef'"),
    ),
    "zip of an unknown study": (
        "GET",
        f"/api/studies/{UNKNOWN_STUDY}/archive.zip",
        None,
        error(404, "not-found", f"no study {UNKNOWN_STUDY}"),
    ),
    "zip of a malformed UID": (
        "GET",
        "/api/studies/1.2.abc!/archive.zip",
        None,
        error(400, "bad-parameter", "study is not a UID: '1.2.abc!'", "study"),
    ),
    "unknown admin path": (
        "GET",
        "/api/nothing",
        None,
        error(404, "not-found", "nothing at /api/nothing"),
    ),
    "echo by GET": (
        "GET",
        "/api/remotes/dest/echo",
        None,
        error(405, "method-not-allowed", "/api/remotes/dest/echo does not take GET; it takes POST"),
    ),
    "statistics by POST": (
        "POST",
        "/api/statistics",
        None,
        error(405, "method-not-allowed", "/api/statistics does not take POST; it takes GET, HEAD"),
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_shape(setup: Setup, case: str) -> None:
    method, url, body, expected = ERRORS[case]
    # The admin API's POSTs take JSON only (test_cross_site.py has the refusals).
    headers = JSON if method == "POST" else {}
    response = setup.http.request(method, url, content=body, headers=headers)
    assert response.status_code == expected["error"]["status"]
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected


def test_zip_entries_are_the_instances_named(setup: Setup) -> None:
    response = setup.http.get(f"/api/studies/{BIG_STUDY}/archive.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        for name in archive.namelist():
            ds = dcmread(io.BytesIO(archive.read(name)))
            assert name.endswith(f"_{ds.SOPInstanceUID}.dcm")
            assert str(ds.StudyInstanceUID) == BIG_STUDY
