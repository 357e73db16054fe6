"""On PostgreSQL, two nodes adding the first instance of two new series of one study at the
same moment: the study's derived lists (ModalitiesInStudy, SOPClassesInStudy) and counts
keep both, the second writer waiting for the first instead of writing over its list."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from pypacs.archive.ingest import build_record, configure_pydicom, read_header
from pypacs.index.engine import close_engine, make_engine
from pypacs.index.migrations import migrate
from pypacs.index.writes import InstanceRecord, Outcome, WriteResult, upsert_instance
from pypacs.store import BlobKey

from dicomgen import Spec, write
from helpers import pg_database, wait_for

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    for url in pg_database():
        engine = make_engine(url, pool_size=4)
        migrate(engine)
        yield engine
        close_engine(engine)


def record(tmp_path: Path, spec: Spec, key: str) -> InstanceRecord:
    configure_pydicom()
    data = write(spec, tmp_path).read_bytes()
    return build_record(read_header(data), BlobKey(key), len(data))


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return bool(conn.exec_driver_sql(query).scalar_one())


def test_two_new_series_of_one_study_at_once_keep_both_modalities(
    pg_engine: Engine, tmp_path: Path
) -> None:
    first = record(tmp_path, Spec("LISTS", "Two^Writers", 1, 1, 1, modality="CT"), "aa/1")
    with pg_engine.begin() as conn:
        assert upsert_instance(conn, first, replace=False).outcome is Outcome.STORED
    mr = record(tmp_path, Spec("LISTS", "Two^Writers", 1, 2, 1, modality="MR"), "aa/2")
    pt = record(tmp_path, Spec("LISTS", "Two^Writers", 1, 3, 1, modality="PT"), "aa/3")
    results: list[WriteResult] = []

    with pg_engine.connect() as one:
        trans = one.begin()
        # Node one: a new MR series, not committed yet.
        results.append(upsert_instance(one, mr, replace=False))

        def node_two() -> None:
            with pg_engine.begin() as two:
                results.append(upsert_instance(two, pt, replace=False))

        other = threading.Thread(target=node_two)
        other.start()
        wait_for(lambda: _waiting_on_a_lock(pg_engine), timeout=60, what="node two to wait")
        trans.commit()
        other.join(timeout=60)
        assert not other.is_alive()
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    with pg_engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT modalities_in_study, sop_classes_in_study, num_series, num_instances "
                "FROM study"
            )
        ).one()
    assert row.modalities_in_study == "CT\\MR\\PT"
    assert len(row.sop_classes_in_study.split("\\")) == 2  # CT and MR Image Storage
    assert (row.num_series, row.num_instances) == (3, 3)
