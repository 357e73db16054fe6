"""The consistency check on blobs other nodes share: a blob file with no index row that is
younger than the grace period may be another node's, about to be indexed, and is left
alone; an older one is re-indexed. A temporary file is removed only once it is older than
an hour, since a younger one may be another node's write under way."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from pypacs.store.filesystem import FilesystemStore

from dicomgen import Spec, sop_uid, write
from helpers import index_counts, run_pypacs

HOURS_AGO = time.time() - 2 * 3600


def age(path: Path, when: float = HOURS_AGO) -> None:
    os.utime(path, (when, when))


def test_a_shared_folder_keeps_temporary_files_younger_than_an_hour(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "blobs", fsync=False, shared=True)
    fresh = store.root / "ab" / ("ab" + "0" * 30 + ".tmp")
    old = store.root / "cd" / ("cd" + "0" * 30 + ".tmp")
    fresh.write_bytes(b"another node writing")
    old.write_bytes(b"left by a crash")
    age(old)
    assert [keys for _, keys in store.scan() if keys] == []
    assert fresh.exists()
    assert not old.exists()
    # A folder of one node's own: every leftover goes, young or old.
    alone = FilesystemStore(tmp_path / "blobs", fsync=False)
    list(alone.scan())
    assert not fresh.exists()


@pytest.mark.postgresql
def test_check_leaves_a_fresh_orphan_alone_and_reindexes_an_old_one(
    tmp_path: Path, pg_url: str
) -> None:
    data, source = tmp_path / "data", tmp_path / "in"
    source.mkdir()
    write(Spec("GRACE", "Shared^Folder", 1, 1, 1), source)
    flags = ("--data", str(data), "--database-url", pg_url)
    imported = run_pypacs("import", *flags, str(source), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    # Two blobs no row names yet, as another node leaves them between its upload and its
    # commit: one just written, one from two hours ago (a node that died meanwhile).
    fresh_file = write(Spec("GRACE", "Shared^Folder", 1, 1, 2), tmp_path)
    old_file = write(Spec("GRACE", "Shared^Folder", 1, 1, 3), tmp_path)
    fresh = data / "blobs" / "ee" / ("ee" + "1" * 30)
    old = data / "blobs" / "ff" / ("ff" + "2" * 30)
    shutil.copyfile(fresh_file, fresh)
    shutil.copyfile(old_file, old)
    age(old)

    checked = run_pypacs("check", *flags, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert f"re-indexed {sop_uid('GRACE', 1, 1, 3)}" in lines
    left = f"not indexed yet ee/{'ee' + '1' * 30}: within [storage.s3] orphan_grace_seconds"
    assert f"{left}, left alone" in lines
    assert fresh.exists()
    assert index_counts(pg_url)["instance"] == 2

    # Past the grace period (here set to 0 s), the same check indexes it.
    again = run_pypacs("check", *flags, "--s3-orphan-grace-seconds", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"re-indexed {sop_uid('GRACE', 1, 1, 2)}" in again.stdout.splitlines()
    assert index_counts(pg_url)["instance"] == 3
