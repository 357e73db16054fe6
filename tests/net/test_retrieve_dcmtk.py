"""C-MOVE and C-GET from foreign clients: DCMTK's movescu to a DCMTK storescp, and getscu
into a folder, at every level; every instance arrives byte for byte and the counts are exact."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread, uid
from pydicom.filereader import read_file_meta_info

from dicomgen import Spec, dataset_bytes, write_as
from helpers import store_files
from receiver import free_port
from serving import RunningServer, start_pypacs

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
DEST = "DCMDEST"

# Two patients; study 1 of RET1 has an uncompressed series and one stored as JPEG 2000 and RLE.
CORPUS = [
    (Spec("RET1", "Doe^Jane", 1, 1, i, rows=32), uid.ExplicitVRLittleEndian) for i in (1, 2, 3)
] + [
    (Spec("RET1", "Doe^Jane", 1, 2, 1, rows=32), uid.JPEG2000Lossless),
    (Spec("RET1", "Doe^Jane", 1, 2, 2, rows=32), uid.RLELossless),
    (Spec("RET1", "Doe^Jane", 2, 1, 1, rows=32), uid.ExplicitVRLittleEndian),
    (Spec("RET1", "Doe^Jane", 2, 1, 2, rows=32), uid.ImplicitVRLittleEndian),
    (Spec("RET2", "Roe^Rick", 1, 1, 1, rows=32), uid.ExplicitVRLittleEndian),
    (Spec("RET2", "Roe^Rick", 1, 1, 2, rows=32), uid.ExplicitVRLittleEndian),
]


class Archive:
    def __init__(self, server: RunningServer, files: dict[str, Path], dest_port: int) -> None:
        self.server = server
        self.files = files  # SOP Instance UID -> the file sent
        self.dest_port = dest_port
        self.headers = {u: dcmread(p, stop_before_pixels=True) for u, p in files.items()}

    def uids(self, **where: str) -> set[str]:
        return {
            u for u, ds in self.headers.items() if all(ds.get(k) == v for k, v in where.items())
        }


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    folder = tmp_path_factory.mktemp("retrieve-dcmtk")
    files = [write_as(spec, folder, syntax) for spec, syntax in CORPUS]
    dest_port = free_port()
    config = folder / "pypacs.toml"
    config.write_text(
        f'[remotes.dest]\nae_title = "{DEST}"\nhost = "127.0.0.1"\nport = {dest_port}\n'
    )
    srv = start_pypacs(folder / "data", "--config", str(config))
    statuses = store_files(srv.dicom_port, files)
    assert {int(s.Status) for s in statuses.values()} == {0}
    by_uid = {str(read_file_meta_info(p).MediaStorageSOPInstanceUID): p for p in files}
    yield Archive(srv, by_uid, dest_port)
    srv.kill()


def wait_for_echo(ae_title: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        args = ["echoscu", "-aec", ae_title, "127.0.0.1", str(port)]
        if subprocess.run(args, capture_output=True, env=NODELAY).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{ae_title} did not answer on {port}")


@pytest.fixture
def storescp(archive: Archive, tmp_path: Path) -> Iterator[Path]:
    """DCMTK's storescp as the move destination, taking any transfer syntax (+xa)."""
    folder = tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen(
        ["storescp", "+xa", "-aet", DEST, "-od", str(folder), str(archive.dest_port)],
        env=NODELAY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(DEST, archive.dest_port)
        yield folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def received(folder: Path) -> dict[str, Path]:
    return {str(read_file_meta_info(p).MediaStorageSOPInstanceUID): p for p in folder.iterdir()}


def counts(output: str) -> dict[str, str]:
    """The last value DCMTK's debug or verbose output gives for each sub-operation count."""
    found = {}
    for name in ("Remaining", "Completed", "Failed", "Warning"):
        values = re.findall(rf"{name} Suboperations\s*:\s*(\S+)", output)
        found[name] = values[-1] if values else "?"
    return found


def study_uid(archive: Archive, patient: str, study: int) -> str:
    return next(
        str(ds.StudyInstanceUID)
        for ds in archive.headers.values()
        if ds.PatientID == patient and ds.StudyID == f"S{study}"
    )


LEVELS = ["PATIENT", "STUDY", "SERIES", "IMAGE"]


def keys_for(archive: Archive, level: str) -> tuple[list[str], set[str]]:
    """movescu/getscu keys for one entity at ``level`` of RET1's first study, and the
    SOP Instance UIDs they name."""
    study = study_uid(archive, "RET1", 1)
    series = str(
        archive.headers[next(iter(archive.uids(StudyInstanceUID=study)))].SeriesInstanceUID
    )
    if level == "PATIENT":
        return ["PatientID=RET1"], archive.uids(PatientID="RET1")
    if level == "STUDY":
        return [f"StudyInstanceUID={study}"], archive.uids(StudyInstanceUID=study)
    compressed = next(
        str(ds.SeriesInstanceUID) for ds in archive.headers.values() if ds.SeriesNumber == 2
    )
    if level == "SERIES":
        return (
            [f"StudyInstanceUID={study}", f"SeriesInstanceUID={compressed}"],
            archive.uids(SeriesInstanceUID=compressed),
        )
    two = sorted(archive.uids(SeriesInstanceUID=series))[:2]
    return (
        [
            f"StudyInstanceUID={study}",
            f"SeriesInstanceUID={series}",
            "SOPInstanceUID=" + "\\".join(two),
        ],
        set(two),
    )


def retrieve_with(
    tool: str, flags: list[str], level: str, keys: list[str], archive: Archive
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK's movescu or getscu against the archive for ``keys`` at ``level``."""
    model = "-P" if level == "PATIENT" else "-S"
    return subprocess.run(
        [tool, *flags, model, "-aec", "PYPACS", "-k", f"QueryRetrieveLevel={level}"]
        + [arg for key in keys for arg in ("-k", key)]
        + ["127.0.0.1", str(archive.server.dicom_port)],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=60,
    )


@pytest.mark.parametrize("level", LEVELS)
def test_movescu_to_storescp(archive: Archive, storescp: Path, level: str) -> None:
    keys, expected = keys_for(archive, level)
    run = retrieve_with("movescu", ["-d", "-aem", DEST], level, keys, archive)
    assert run.returncode == 0, run.stderr
    got = received(storescp)
    assert set(got) == expected
    for sop_uid, path in got.items():
        sent = archive.files[sop_uid]
        # Stored as sent, sent as stored: same transfer syntax, same bytes.
        assert (
            read_file_meta_info(path).TransferSyntaxUID
            == read_file_meta_info(sent).TransferSyntaxUID
        )
        assert digest(dataset_bytes(path)) == digest(dataset_bytes(sent))
    assert counts(run.stdout + run.stderr) == {
        "Remaining": "none",
        "Completed": str(len(expected)),
        "Failed": "0",
        "Warning": "0",
    }
    assert "0x0000: Success" in run.stdout + run.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_getscu_into_a_folder(archive: Archive, tmp_path: Path, level: str) -> None:
    keys, expected = keys_for(archive, level)
    out = tmp_path / "got"
    out.mkdir()
    # getscu offers every storage class with the uncompressed syntaxes; the JPEG 2000 and
    # RLE instances are transcoded for it.
    run = retrieve_with("getscu", ["-v", "-od", str(out)], level, keys, archive)
    assert run.returncode == 0, run.stderr
    got = received(out)
    assert set(got) == expected
    for sop_uid, path in got.items():
        sent = archive.files[sop_uid]
        sent_syntax = read_file_meta_info(sent).TransferSyntaxUID
        if read_file_meta_info(path).TransferSyntaxUID == sent_syntax:
            assert digest(dataset_bytes(path)) == digest(dataset_bytes(sent))
        else:
            # Transcoded for getscu: the same pixels, the same attributes.
            assert (dcmread(path).pixel_array == dcmread(sent).pixel_array).all()
            assert dcmread(path).PatientName == dcmread(sent).PatientName
    assert counts(run.stdout + run.stderr) == {
        "Remaining": "0",
        "Completed": str(len(expected)),
        "Failed": "0",
        "Warning": "0",
    }


def test_movescu_to_an_unknown_destination(archive: Archive) -> None:
    study = study_uid(archive, "RET2", 1)
    run = subprocess.run(
        [
            *("movescu", "-d", "-S", "-aec", "PYPACS", "-aem", "NOBODY"),
            *("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"),
            *("127.0.0.1", str(archive.server.dicom_port)),
        ],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=60,
    )
    assert "0xa801" in (run.stdout + run.stderr).lower()
    assert "unknown move destination 'NOBODY'" in run.stdout + run.stderr
