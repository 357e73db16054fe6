"""`pypacs import` and `pypacs check`, run as a user would run them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import sqlalchemy as sa
from pydicom import dcmread

from dicomgen import Spec, make_dataset, write
from helpers import run_pypacs

pypacs = run_pypacs


def summary(imported: int, present: int, rejected: int, not_dicom: int, dicomdir: int) -> str:
    return (
        f"imported {imported}, already present {present}, rejected {rejected}, "
        f"skipped (not DICOM) {not_dicom}, skipped (DICOMDIR) {dicomdir}"
    )


def count(data: Path, table: str) -> int:
    engine = sa.create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as conn:
        n = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(n)


def test_import_folder_summarises_and_never_tracebacks(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    good = [write(Spec("P1", "A^B", 1, 1, i), src / "a") for i in (1, 2, 3)]
    good.append(write(Spec("P2", "C^D", 1, 1, 1), src / "a" / "b"))
    shutil.copy(good[0], src / "copy-of-first.dcm")  # already present once the first is in
    (src / "notes.txt").write_text("not an image")
    truncated = src / "truncated.dcm"
    truncated.write_bytes(good[1].read_bytes()[:200])
    no_uid = make_dataset(Spec("P3", "E^F", 1, 1, 1))
    del no_uid.SeriesInstanceUID
    no_uid.save_as(src / "no-series-uid.dcm", enforce_file_format=True)

    data = tmp_path / "data"
    result = pypacs("import", "--data", str(data), "--no-progress", str(src), cwd=tmp_path)

    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 1  # some files were rejected
    lines = result.stdout.splitlines()
    assert lines[0] == f"new archive {data} (index sqlite:///{data / 'index.sqlite'})"
    assert lines[-1] == summary(4, 1, 2, 1, 0)
    assert any(line.startswith(f"skipped {src / 'notes.txt'}: not a DICOM file") for line in lines)
    assert any(line.startswith(f"rejected {truncated}: ") for line in lines)
    assert f"rejected {src / 'no-series-uid.dcm'}: dataset lacks SeriesInstanceUID" in lines
    assert count(data, "instance") == 4
    assert count(data, "patient") == 2
    blobs = [p for p in (data / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 4

    again = pypacs("import", "--data", str(data), "--no-progress", str(src / "a"), cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"archive {data} (index sqlite:///{data / 'index.sqlite'})",
        summary(0, 4, 0, 0, 0),
    ]


def test_import_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = pypacs("import", "--data", str(tmp_path / "d"), str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"no such file or folder: {tmp_path / 'nope'}" in result.stderr


def test_check_reindexes_orphans_and_reports_missing_blobs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in (1, 2, 3):
        write(Spec("P1", "A^B", 1, 1, i), src)
    data = tmp_path / "data"
    assert (
        pypacs("import", "--data", str(data), "--no-progress", str(src), cwd=tmp_path).returncode
        == 0
    )

    # An orphan: a blob written before a crash, its index row never committed.
    orphan_source = write(Spec("P1", "A^B", 1, 2, 9), tmp_path)
    name = "0123456789abcdef0123456789abcdef"
    orphan = data / "blobs" / name[:2] / name
    shutil.copy(orphan_source, orphan)
    # A lost file: its row stays, its blob is gone.
    engine = sa.create_engine(f"sqlite:///{data / 'index.sqlite'}")
    with engine.connect() as conn:
        lost_key, lost_uid = conn.execute(
            sa.text("SELECT blob_key, sop_instance_uid FROM instance ORDER BY pk LIMIT 1")
        ).one()
    engine.dispose()
    (data / "blobs" / lost_key).unlink()

    result = pypacs("check", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 1
    assert f"re-indexed {orphan_source.stem}" in result.stdout
    assert f"missing blob {lost_key} of instance {lost_uid}" in result.stdout
    assert (
        result.stdout.splitlines()[-1]
        == "3 blobs checked: 1 re-indexed, 1 missing, 0 not indexable"
    )
    assert count(data, "instance") == 4
    assert count(data, "series") == 2


def test_a_cd_folder_with_a_dicomdir_imports_its_instances_and_skips_the_dicomdir(
    tmp_path: Path,
) -> None:
    # A medium as PS3.10 lays it out, its DICOMDIR written by DCMTK's dcmmkdir: the
    # DICOMDIR at the root, the files it references in a folder below.
    cd = tmp_path / "cd"
    (cd / "STUDY1").mkdir(parents=True)
    for number in (1, 2):
        make_dataset(Spec("CD1", "Disc^Dora", 1, 1, number)).save_as(
            cd / "STUDY1" / f"IM{number}", enforce_file_format=True
        )
    subprocess.run(
        ["dcmmkdir", "--recurse", "--invent", "STUDY1"], cwd=cd, check=True, capture_output=True
    )
    directory = dcmread(cd / "DICOMDIR")
    assert directory.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    referenced = {
        tuple(record.ReferencedFileID)
        for record in directory.DirectoryRecordSequence
        if "ReferencedFileID" in record
    }
    assert referenced == {("STUDY1", "IM1"), ("STUDY1", "IM2")}
    data = tmp_path / "data"

    result = pypacs("import", "--data", str(data), "--no-progress", str(cd), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == summary(2, 0, 0, 0, 1)
    assert f"skipped {cd / 'DICOMDIR'}: a DICOMDIR (media directory), not an instance" in lines
    assert not [line for line in lines if line.startswith("rejected")]
    assert count(data, "instance") == 2
    assert count(data, "study") == 1


def test_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write(Spec("P1", "A^B", 1, 1, 1), src)
    data = tmp_path / "data"
    assert pypacs("import", "--data", str(data), str(src), cwd=tmp_path).returncode == 0

    one = pypacs("check", "--data", str(data), cwd=tmp_path)
    assert one.stdout.splitlines()[-1] == "1 blob checked: 0 re-indexed, 0 missing, 0 not indexable"

    write(Spec("P1", "A^B", 1, 1, 2), src)
    assert pypacs("import", "--data", str(data), str(src), cwd=tmp_path).returncode == 0
    two = pypacs("check", "--data", str(data), cwd=tmp_path)
    assert (
        two.stdout.splitlines()[-1] == "2 blobs checked: 0 re-indexed, 0 missing, 0 not indexable"
    )
