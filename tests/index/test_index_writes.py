"""The ingest path's writes: prepared statements, counts kept per statement, group commits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pypacs.archive import Archive
from pypacs.errors import IndexConflict
from pypacs.index import schema, tx
from pypacs.index.prepared import Prepared, Runner
from pypacs.index.writes import Outcome, is_stored

from dicomgen import Spec, sop_uid, write
from helpers import table_rows


def store(archive: Archive, tmp_path: Path, spec: Spec) -> Outcome:
    return archive.store_file(write(spec, tmp_path)).outcome


def test_prepared_refuses_a_literal_parameter(archive: Archive) -> None:
    bump = sa.update(schema.series).values(num_instances=schema.series.c.num_instances + 1)
    with pytest.raises(ValueError, match="not a required bindparam"):
        Prepared(bump, archive.engine.dialect)


def test_prepared_passes_absent_values_as_null(archive: Archive) -> None:
    select: sa.Select[Any] = sa.select(sa.literal_column("1")).where(
        sa.bindparam("x", type_=sa.String).is_(None)
    )
    prepared = Prepared(select, archive.engine.dialect)
    with archive.engine.connect() as conn:
        run = Runner(conn)
        assert run.rows(prepared, {}) == [(1,)]
        assert run.rows(prepared, {"x": "a"}) == []
        run.close()


def test_driver_errors_become_sqlalchemy_errors(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 1, 1))
    (row,) = table_rows(archive, schema.instance)
    insert = schema.instance.insert().values(
        {c.name: sa.bindparam(c.name) for c in schema.instance.columns if c.name != "pk"}
    )
    prepared = Prepared(insert, archive.engine.dialect)
    values = {c.name: getattr(row, c.name) for c in schema.instance.columns if c.name != "pk"}

    def insert_again(conn: sa.Connection) -> None:
        run = Runner(conn)
        run.run(prepared, values)  # the same SOP Instance UID and blob key: unique

    with pytest.raises(IntegrityError):
        tx.write(archive.engine, insert_again)
    # Through the group writer it is the archive's own conflict, which _submit retries.
    with pytest.raises(IndexConflict):
        archive._writer.submit(insert_again)
    assert len(table_rows(archive, schema.instance)) == 1


def test_counts_and_lists_follow_each_kind_of_insert(archive: Archive, tmp_path: Path) -> None:
    # a new patient; an instance in its series; a new series (MR) in its study; a new study
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 1, 1))
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 1, 2))
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 2, 1, modality="MR"))
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 2, 1, 1))
    assert store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 1, 2)) is Outcome.DUPLICATE

    (patient,) = table_rows(archive, schema.patient)
    assert (patient.num_studies, patient.num_series, patient.num_instances) == (2, 3, 4)
    studies = table_rows(archive, schema.study)
    assert [(s.num_series, s.num_instances) for s in studies] == [(2, 3), (1, 1)]
    assert [s.modalities_in_study for s in studies] == ["CT\\MR", "CT"]
    assert [s.sop_classes_in_study for s in studies] == [
        "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.2",
    ]
    assert [s.num_instances for s in table_rows(archive, schema.series)] == [2, 1, 1]
    with archive.engine.connect() as conn:
        assert is_stored(conn, sop_uid("P1", 1, 2, 1))
        assert not is_stored(conn, sop_uid("P1", 3, 1, 1))


def test_concurrent_stores_share_one_commit(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(archive, tmp_path, Spec("P1", "Doe^Jane", 1, 1, 1))
    paths = [write(Spec("P1", "Doe^Jane", 1, 1, n), tmp_path) for n in range(2, 26)]
    commits: list[int] = []
    real_write = tx.write

    def counted_write(engine: sa.Engine, fn: Any, **options: Any) -> Any:
        result = real_write(engine, fn, **options)
        commits.append(1)
        return result

    monkeypatch.setattr(tx, "write", counted_write)
    release = threading.Event()
    # A write under way holds the lead while the stores queue behind it.
    blocker = threading.Thread(target=archive._writer.submit, args=(lambda c: release.wait(),))
    blocker.start()
    seen_after_return: list[bool] = []

    def one(path: Path) -> None:
        result = archive.store_file(path)
        # Returned: its row is committed, visible to any other connection.
        with archive.engine.connect() as conn:
            seen_after_return.append(is_stored(conn, result.sop_instance_uid))

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    while len(archive._writer._pending) < len(paths):  # polled, not slept
        threading.Event().wait(0.005)
    release.set()
    for t in [blocker, *threads]:
        t.join()
    assert seen_after_return == [True] * len(paths)
    assert len(commits) == 2  # the blocker's, then one for all the stores
    (series,) = table_rows(archive, schema.series)
    assert series.num_instances == len(paths) + 1
    (patient,) = table_rows(archive, schema.patient)
    assert patient.num_instances == len(paths) + 1


def test_a_failing_write_in_a_group_leaves_the_others(archive: Archive) -> None:
    results: list[object] = []
    gate = threading.Barrier(8)

    def good(conn: sa.Connection) -> int:
        return 1

    def bad(conn: sa.Connection) -> int:
        raise RuntimeError("refused")

    def one(n: int) -> None:
        gate.wait()
        try:
            results.append(archive._writer.submit(bad if n == 3 else good))
        except RuntimeError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == ["1"] * 7 + ["refused"]
