"""SIGKILL in the middle of an ingest: nothing acknowledged is lost, start-up repairs the rest.

DESIGN.md rule 1: a C-STORE success is sent only once the blob is durable and its index row
committed; a crash in between leaves at most an orphan blob, which start-up re-indexes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from dicomgen import Spec, dataset_bytes, write
from helpers import (
    SUCCESS,
    assert_counts_consistent,
    association,
    blob_files,
    blob_path,
    contexts_for,
    index_rows,
    send_file,
    startup_check,
    status_of,
    store_files,
    tmp_files,
)
from serving import RunningServer

THREADS = 4
PER_THREAD = 40
KILL_AFTER = 60  # acknowledgements seen before the kill, of THREADS * PER_THREAD


class Ingest:
    """Parallel associations storing files; records what the server acknowledged."""

    def __init__(self, port: int, batches: list[list[Path]]) -> None:
        self.port = port
        self.batches = batches
        self.acked: set[str] = set()
        self.errors: list[BaseException] = []
        self.enough = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n, batch), name=f"ingest-{n}")
            for n, batch in enumerate(batches)
        ]

    def _run(self, n: int, batch: list[Path]) -> None:
        try:
            # A short DIMSE timeout: once the server is gone, the request in flight is
            # answered by nothing, and pynetdicom waits that long before giving up.
            with association(
                self.port, contexts_for(batch), ae_title=f"CRASH{n}", timeout=2.0
            ) as assoc:
                assert assoc.is_established
                for path in batch:
                    if not assoc.is_established:
                        return
                    try:
                        status = send_file(assoc, path)
                    except RuntimeError:  # the association ended between two checks
                        return
                    if status_of(status) != SUCCESS:
                        return
                    self._ack(str(read_file_meta_info(path).MediaStorageSOPInstanceUID))
        except BaseException as exc:
            self.errors.append(exc)

    def _ack(self, sop_instance_uid: str) -> None:
        with self._lock:
            self.acked.add(sop_instance_uid)
            if len(self.acked) >= KILL_AFTER:
                self.enough.set()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not finish"


def make_batches(folder: Path) -> list[list[Path]]:
    """One patient per thread; two studies of two series each."""
    return [
        [
            write(
                Spec(f"CRASH{n}", f"Crash^{n}", 1 + i // 20, 1 + i // 10, i, rows=64),
                folder,
            )
            for i in range(PER_THREAD)
        ]
        for n in range(THREADS)
    ]


def test_sigkill_mid_ingest_loses_nothing_acknowledged(
    server_factory: object, tmp_path: Path
) -> None:
    server: RunningServer = server_factory()  # type: ignore[operator]
    folder = tmp_path / "sent"
    folder.mkdir()
    batches = make_batches(folder)
    sent = {str(read_file_meta_info(p).MediaStorageSOPInstanceUID): p for b in batches for p in b}
    total = len(sent)

    ingest = Ingest(server.dicom_port, batches)
    ingest.start()
    assert ingest.enough.wait(timeout=60), "the ingest never got going"
    server.kill()
    ingest.join()
    assert ingest.errors == []
    acked = set(ingest.acked)
    assert KILL_AFTER <= len(acked) < total, "the kill did not land mid-ingest"

    restarted: RunningServer = server_factory(data=server.data)  # type: ignore[operator]
    url = restarted.database_url
    check = startup_check(restarted.log())
    assert (check["missing"], check["unreadable"]) == (0, 0)

    rows = {row["sop_instance_uid"]: row for row in index_rows(url, "instance")}
    # Every acknowledged instance is indexed; nothing indexed was never sent.
    assert acked - rows.keys() == set()
    assert rows.keys() - sent.keys() == set()
    assert check["blobs"] == len(rows)
    # Every row's blob is there, whole: the dataset bytes are those sent.
    for sop_uid, row in rows.items():
        blob = blob_path(restarted.data, row["blob_key"])
        assert blob.is_file(), f"{sop_uid}: blob {row['blob_key']} is missing"
        assert blob.stat().st_size == row["blob_size"]
        assert (
            hashlib.sha256(dataset_bytes(blob)).digest()
            == hashlib.sha256(dataset_bytes(sent[sop_uid])).digest()
        )
    # No blob without a row, no temporary leftovers.
    assert {str(p.relative_to(restarted.data / "blobs")) for p in blob_files(restarted.data)} == {
        row["blob_key"] for row in rows.values()
    }
    assert tmp_files(restarted.data) == []
    assert_counts_consistent(url)

    # The recovered archive takes the whole set again: the rest stored, the others known.
    statuses = store_files(restarted.dicom_port, list(sent.values()))
    assert Counter(status_of(s) for s in statuses.values()) == {SUCCESS: total}
    assert len(index_rows(url, "instance")) == total
    assert len(blob_files(restarted.data)) == total
    assert_counts_consistent(url)
