"""Sending a study from the admin API to DCMTK's storescp (a real process) while the
DICOM port lets no caller retrieve (``[access] unknown_callers`` without get and move, the
remote allowed nothing but echo): pypacs sends by C-STORE itself over one association to
the remote (no C-MOVE to its own port, which those rules would refuse), and what storescp
received are the stored bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
from pydicom import uid
from pydicom.filereader import read_file_meta_info

from dicomgen import Spec, dataset_bytes, write_as
from helpers import blob_path, index_rows, store_files, wait_for
from serving import start_pypacs

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
STUDY = [
    (Spec("SEND1", "Send^One", 1, 1, i, rows=32), uid.ExplicitVRLittleEndian) for i in (1, 2)
] + [(Spec("SEND1", "Send^One", 1, 2, 1, rows=32), uid.JPEG2000Lossless)]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_send_a_study_when_no_caller_may_retrieve(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    port, folder = storescp
    config = tmp_path / "pypacs.toml"
    config.write_text(
        '[access]\nunknown_callers = ["store"]\n\n'
        f'[remotes.store]\nae_title = "STORESCP"\nhost = "127.0.0.1"\nport = {port}\n'
        'allow = ["echo"]\n'
    )
    files = [write_as(spec, tmp_path, syntax) for spec, syntax in STUDY]
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    try:
        statuses = store_files(srv.dicom_port, files)
        assert {int(s.Status) for s in statuses.values()} == {0}
        rows = index_rows(srv.database_url, "instance")
        stored = {r["sop_instance_uid"]: blob_path(srv.data, r["blob_key"]) for r in rows}
        study = index_rows(srv.database_url, "study")[0]["study_instance_uid"]
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as http:
            response = http.post("/api/remotes/store/move", json={"StudyInstanceUID": study})
            assert response.status_code == 202
            job = response.json()["job"]

            def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = http.get(f"/api/jobs/{job}").json()
                return None if body["state"] in ("queued", "running") else body

            final = wait_for(finished, timeout=60, what=f"job {job} to finish")
    finally:
        srv.kill()
    assert (final["state"], final["status"], final["error"]) == ("done", "0x0000", None)
    assert (final["completed"], final["failed"], final["warning"]) == (3, 0, 0)
    # storescp has written each file before answering its C-STORE, so the job being done
    # means every file is there.
    received = {str(read_file_meta_info(p).MediaStorageSOPInstanceUID): p for p in folder.iterdir()}
    assert set(received) == set(stored)
    for sop_uid, path in received.items():
        # Bytes in are bytes out: same transfer syntax, same data set bytes.
        assert (
            read_file_meta_info(path).TransferSyntaxUID
            == read_file_meta_info(stored[sop_uid]).TransferSyntaxUID
        )
        assert md5(dataset_bytes(path)) == md5(dataset_bytes(stored[sop_uid]))
