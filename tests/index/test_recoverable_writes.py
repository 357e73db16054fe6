"""On SQLite a new instance's rows are committed without an fsync of the write-ahead log
(a power failure may lose them, and start-up's check re-indexes the durable file), while
every other write, a replacement or a delete, is synced before it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pypacs.archive import Archive
from pypacs.archive.check import check
from pypacs.archive.options import ArchiveOptions
from pypacs.index import tx
from pypacs.query.entity import EntityRef

from dicomgen import Spec, make_dataset, write

# PRAGMA synchronous reads 1 for NORMAL, 2 for FULL.
NORMAL, FULL = 1, 2


def synchronous(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def sqlite_archive(tmp_path: Path, *, overwrite: bool = False) -> Archive:
    return Archive.open(
        ArchiveOptions(
            f"sqlite:///{tmp_path / 'index.sqlite'}",
            str(tmp_path / "blobs"),
            overwrite_duplicates=overwrite,
            reserve_path="",
            reserve_bytes=0,
            max_instance_bytes=0,
            fsync=False,
        )
    )


def test_write_levels_on_sqlite(tmp_path: Path) -> None:
    archive = sqlite_archive(tmp_path)
    try:
        engine = archive.engine
        assert tx.write(engine, synchronous, recoverable=True) == NORMAL
        assert tx.write(engine, synchronous) == FULL
        # The connection goes back to the pool: the next write sets its own level again.
        assert tx.write(engine, synchronous, recoverable=True) == NORMAL
        assert tx.write(engine, synchronous) == FULL
    finally:
        archive.close()


def _levels_of_commits(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The synchronous level each index write transaction of ``archive`` ran at."""
    levels: list[int] = []
    real_write = tx.write

    def recording(engine: sa.Engine, fn: Any, **options: Any) -> Any:
        def wrapped(conn: sa.Connection) -> Any:
            levels.append(synchronous(conn))
            return fn(conn)

        return real_write(engine, wrapped, **options)

    monkeypatch.setattr(tx, "write", recording)
    return levels


def test_new_instances_relaxed_replacements_and_deletes_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = Spec("P1", "Doe^Jane", 1, 1, 1)
    path = write(spec, tmp_path)
    archive = sqlite_archive(tmp_path / "a")
    try:
        levels = _levels_of_commits(archive, monkeypatch)
        archive.store_file(path)
        assert levels == [NORMAL]
        levels.clear()
        archive.delete(EntityRef(str(make_dataset(spec).StudyInstanceUID)))
        assert levels and set(levels) == {FULL}
    finally:
        archive.close()
    monkeypatch.undo()
    replacing = sqlite_archive(tmp_path / "b", overwrite=True)
    try:
        levels = _levels_of_commits(replacing, monkeypatch)
        replacing.store_file(path)
        replacing.store_file(path)  # the stored copy replaced: its old blob goes next
        assert levels == [FULL, FULL]
    finally:
        replacing.close()


def test_a_lost_row_is_re_indexed_from_its_file(tmp_path: Path) -> None:
    """What a power failure may do to a relaxed commit: the row is gone, the file is not;
    the start-up check finds the file and indexes it again."""
    spec = Spec("P1", "Doe^Jane", 1, 1, 1)
    archive = sqlite_archive(tmp_path)
    try:
        uid = archive.store_file(write(spec, tmp_path)).sop_instance_uid
        with archive.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM instance")
        assert check(archive).reindexed == [uid]
        ds = make_dataset(spec)
        located = archive.locate(
            EntityRef(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), uid)
        )
        assert located.sop_instance_uid == uid
    finally:
        archive.close()
