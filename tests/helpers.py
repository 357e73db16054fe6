"""Helpers of the real-socket tests: read the index, list blob files, talk DIMSE to pypacs."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

TABLES = ("patient", "study", "series", "instance")
PG_ADMIN_URL = os.environ.get(
    "PYPACS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SUCCESS = "0x0000"

# -- the index and the blob folder -------------------------------------------------------


def index_rows(url: str, table: str) -> list[dict[str, Any]]:
    """Every row of one index table, in insertion (primary key) order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            query = sa.select(reflected).order_by(reflected.c.pk)
            return [dict(row) for row in conn.execute(query).mappings()]
    finally:
        engine.dispose()


def table_rows(archive: Any, table: Any) -> list[Any]:
    """Every row of an index table of an open Archive, in insertion order."""
    with archive.engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.pk)))


def index_counts(url: str) -> dict[str, int]:
    """Number of rows of each level's table."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in TABLES
            }
    finally:
        engine.dispose()


def startup_check(log: str) -> dict[str, int]:
    """The counts of the last start-up check line of the server log."""
    found = re.findall(
        r"start-up check: (\d+) blobs, (\d+) re-indexed, (\d+) missing, (\d+) unreadable", log
    )
    blobs, reindexed, missing, unreadable = map(int, found[-1])
    return {"blobs": blobs, "reindexed": reindexed, "missing": missing, "unreadable": unreadable}


def assert_counts_consistent(url: str) -> None:
    """Each level's derived counts equal what its rows say."""
    patients = index_rows(url, "patient")
    studies = index_rows(url, "study")
    series = index_rows(url, "series")
    instances = index_rows(url, "instance")
    per_series = Counter(row["series_pk"] for row in instances)
    assert {s["pk"]: s["num_instances"] for s in series} == dict(per_series)
    series_per_study = Counter(s["study_pk"] for s in series)
    instances_per_study: Counter[int] = Counter()
    for s in series:
        instances_per_study[s["study_pk"]] += per_series[s["pk"]]
    for study in studies:
        assert study["num_series"] == series_per_study[study["pk"]]
        assert study["num_instances"] == instances_per_study[study["pk"]]
    for patient in patients:
        own = [s for s in studies if s["patient_pk"] == patient["pk"]]
        assert patient["num_studies"] == len(own)
        assert patient["num_series"] == sum(s["num_series"] for s in own)
        assert patient["num_instances"] == sum(s["num_instances"] for s in own)


def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = "pypacs_test_" + secrets.token_hex(4)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def blob_files(data: Path) -> list[Path]:
    """Every blob file under ``data/blobs`` (temporary files excluded)."""
    return sorted(p for p in (data / "blobs").rglob("*") if p.is_file() and p.suffix != ".tmp")


def tmp_files(data: Path) -> list[Path]:
    """Temporary files of interrupted writes under ``data/blobs``."""
    return sorted((data / "blobs").rglob("*.tmp"))


def status_of(response: Dataset) -> str:
    """A DIMSE response's status as ``0xHHHH``; ``"none"`` when no response came."""
    return f"0x{int(response.Status):04X}" if "Status" in response else "none"


def blob_path(data: Path, blob_key: str) -> Path:
    return data / "blobs" / blob_key


def assert_nothing_stored(data: Path, url: str) -> None:
    """No index row at any level, no blob file, no temporary file."""
    assert index_counts(url) == dict.fromkeys(TABLES, 0)
    assert blob_files(data) == []
    assert tmp_files(data) == []


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def association_lines(log: str, calling_ae: str) -> list[str]:
    """The server's one-line association summaries for ``calling_ae``."""
    return [line for line in log.splitlines() if f"association from {calling_ae} at " in line]


# -- DIMSE -----------------------------------------------------------------------------

_raw_lock = threading.Lock()
_raw_users = 0
_raw_saved = False


@contextmanager
def files_sent_as_stored() -> Iterator[None]:
    """Within this block pynetdicom sends a file's dataset bytes as they are in the file
    (no decode and re-encode). Nests and overlaps across threads; restores the setting."""
    global _raw_users, _raw_saved
    with _raw_lock:
        if _raw_users == 0:
            _raw_saved = _config.STORE_SEND_CHUNKED_DATASET
            _config.STORE_SEND_CHUNKED_DATASET = True
        _raw_users += 1
    try:
        yield
    finally:
        with _raw_lock:
            _raw_users -= 1
            if _raw_users == 0:
                _config.STORE_SEND_CHUNKED_DATASET = _raw_saved


def contexts_for(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """One (SOP Class, transfer syntax) pair per distinct pair among the files, in order."""
    pairs: dict[tuple[str, str], None] = {}
    for path in paths:
        meta = read_file_meta_info(path)
        pairs[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    return list(pairs)


@contextmanager
def association(
    port: int,
    contexts: Sequence[tuple[str, str]],
    *,
    ae_title: str = "PYTEST",
    called: str = "PYPACS",
    timeout: float = 10.0,
) -> Iterator[Association]:
    """An association proposing one presentation context per (abstract syntax, transfer
    syntax) pair, exactly that syntax in each; released (or aborted) on leaving."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for abstract_syntax, transfer_syntax in contexts:
        ae.add_requested_context(abstract_syntax, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    transport = assoc.dul.socket
    if assoc.is_established and transport is not None and transport.socket is not None:
        # Like DCMTK's TCP_NODELAY=1: without it each small PDU waits ~40 ms on loopback.
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
        # pynetdicom leaves the socket open when the peer resets the connection.
        transport = assoc.dul.socket
        if transport is not None and transport.socket is not None:
            transport.socket.close()


def send_file(assoc: Association, path: Path) -> Dataset:
    """C-STORE of a Part 10 file's dataset bytes as they are; returns the response status
    dataset (empty if the association ended first)."""
    with files_sent_as_stored():
        return assoc.send_c_store(path)


def store_files(
    port: int, paths: Sequence[Path], *, ae_title: str = "PYTEST"
) -> dict[Path, Dataset]:
    """Store the files over one association; each file's response status dataset."""
    with association(port, contexts_for(paths), ae_title=ae_title) as assoc:
        assert assoc.is_established
        return {path: send_file(assoc, path) for path in paths}


def echo(port: int, *, ae_title: str = "PYTEST") -> str:
    """C-ECHO status as ``0xHHHH`` (``"no association"`` if none could be made)."""
    with association(port, [(Verification, ImplicitVRLittleEndian)], ae_title=ae_title) as assoc:
        if not assoc.is_established:
            return "no association"
        return status_of(assoc.send_c_echo())


def c_store_pdus(
    assoc: Association, sop_class: str, sop_instance: str, dataset: bytes, fragment: int
) -> list[bytes]:
    """The encoded P-DATA-TF PDUs of one C-STORE request on ``assoc``'s first accepted
    context, the dataset cut into fragments of at most ``fragment`` bytes."""
    request = C_STORE()
    request.MessageID = 1
    request.Priority = 2
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    encoded = []
    for pdata in message.encode_msg(context_id, fragment):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        encoded.append(pdu.encode())
    return encoded


# -- the command line ------------------------------------------------------------------

# The tests choose their configuration; a PYPACS_CONFIG of the caller's must not leak in.
CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYPACS_CONFIG"}


def run_pypacs(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m pypacs ARGS`` in ``cwd``, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pypacs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**CLI_ENV, **(env or {})},
    )
