"""Queries under abuse, over real sockets, on both index backends: UID lists of many lengths
and one of 50,000 UIDs answer exactly and leave the server's memory bounded; a lone
backslash matches nothing; integers out of range are refused naming the key or parameter;
a database error's text never reaches the peer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from dicomgen import Spec, make_dataset, study_uid, write_dataset
from findfixtures import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    STUDY_ROOT,
    SUCCESS,
    find,
    findscu,
    identifier,
    send_find,
    serve_datasets,
)
from helpers import PG_ADMIN_URL, association, pg_database, status_of, store_files, wait_for
from serving import RunningServer

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
STUDIES = 40
LIST = Spec("LISTS", "Lists^Many", 1, 1, 1, rows=2)
# Before one list parameter, every distinct list length kept a compiled statement for good:
# over these 40 lengths the server grew from 105 to 752 MiB on SQLite (failing every list of
# 1,000 UIDs or more) and to 635 MiB on PostgreSQL. Now it grows by about 10 MiB, and the
# 50,000-UID query peaks near 150 MiB.
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


# -- a lone backslash ------------------------------------------------------------------------

# PS3.5 6.4: a backslash separates values, so "\\" alone is two empty values, and each
# empty value among several matches nothing (docs/conformance.md).
LONE_BACKSLASH = [
    pytest.param("PatientID", id="column"),
    pytest.param("StudyInstanceUID", id="uid"),
    pytest.param("PatientName", id="person-name"),
    pytest.param("PatientAge", id="no-column"),
    pytest.param("NumberOfStudyRelatedInstances", id="count"),
]


@pytest.mark.parametrize("keyword", LONE_BACKSLASH)
def test_a_lone_backslash_matches_nothing(lists_pacs: RunningServer, keyword: str) -> None:
    answer = find(lists_pacs.dicom_port, {"StudyInstanceUID": "", keyword: "\\"})
    assert answer.status == SUCCESS
    assert answer.responses == []
    # The same key left empty is universal: every study of the set.
    assert len(find(lists_pacs.dicom_port, {keyword: ""}).responses) == STUDIES


def test_a_lone_backslash_from_findscu_matches_nothing(
    lists_pacs: RunningServer, tmp_path: Path
) -> None:
    keys = ["QueryRetrieveLevel=STUDY", "PatientID=\\", "StudyInstanceUID"]
    run = findscu(lists_pacs.dicom_port, "-S", keys, tmp_path / "lone")
    assert run.returncode == 0, run.output
    assert run.responses == []
    keys = ["QueryRetrieveLevel=STUDY", f"PatientID={LIST.patient_id}", "StudyInstanceUID"]
    run = findscu(lists_pacs.dicom_port, "-S", keys, tmp_path / "all")
    assert len(run.responses) == STUDIES


# -- integers ----------------------------------------------------------------------------------


def test_counts_match_lists_of_integers(lists_pacs: RunningServer) -> None:
    port = lists_pacs.dicom_port
    # Every study of the set holds one instance.
    assert len(find(port, {"NumberOfStudyRelatedInstances": "2\\1\\3"}).responses) == STUDIES
    assert find(port, {"NumberOfStudyRelatedInstances": "2\\3"}).responses == []
    assert find(port, {"NumberOfStudyRelatedInstances": "2147483647"}).responses == []


OUT_OF_RANGE = ["100000000000000000000", "2147483648", "-2147483649", "0000000000001"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_an_integer_string_out_of_range_is_refused(lists_pacs: RunningServer, value: str) -> None:
    # PS3.5 6.2: IS holds -2**31 .. 2**31 - 1 in at most 12 characters.
    answer = find(lists_pacs.dicom_port, {"NumberOfStudyRelatedInstances": value})
    assert answer.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert answer.final["OffendingElement"].value == 0x00201208


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, "\u00b2", "9" * 5000])
def test_an_integer_string_parameter_out_of_range_is_400(
    lists_pacs: RunningServer, value: str
) -> None:
    http = qido_with(lists_pacs, {"NumberOfStudyRelatedInstances": value})
    assert http.status_code == 400
    assert http.json()["error"]["parameter"] == "NumberOfStudyRelatedInstances"


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize(
    "value", ["100000000000000000000", "2147483648", "9" * 5000, "\u00b2", "-1", "1e3"]
)
def test_limit_and_offset_out_of_range_are_refused(
    lists_pacs: RunningServer, name: str, value: str
) -> None:
    http = qido_with(lists_pacs, {name: value})
    assert http.status_code == 400, http.text
    error = http.json()["error"]
    assert error["parameter"] == name
    assert error["message"].startswith(f"{name} must be an integer from 0 to 2147483647")
    assert len(error["message"]) < 200


def test_the_largest_limit_and_offset_are_answered(lists_pacs: RunningServer) -> None:
    every = qido_with(lists_pacs, {"limit": "2147483647", "offset": "0"})
    assert every.status_code == 200
    assert len(every.json()) == STUDIES
    assert qido_with(lists_pacs, {"offset": "2147483647"}).status_code == 204


def qido_with(srv: RunningServer, params: dict[str, str]) -> httpx.Response:
    url = f"http://127.0.0.1:{srv.http_port}/dicom-web/studies"
    return httpx.get(url, params={"PatientID": LIST.patient_id, **params}, timeout=30)


# -- a database error is logged, never sent --------------------------------------------------

# What the peer is told instead (PS3.4 C.4.1.1.4 statuses; ErrorComment, PS3.7 C.4).
INDEX_UNAVAILABLE = "index unavailable: the reason is in the server's log"
UNEXPECTED = "unexpected failure; see the log"
# Text of the databases' own messages that must not reach a peer.
DATABASE_WORDS = ("study", "relation", "no such", "sqlite", "psycopg", "select", "5432", "fatal")


@pytest.fixture(params=BACKENDS)
def small_pacs(
    request: pytest.FixtureRequest, server_factory: object, tmp_path: Path
) -> Iterator[tuple[RunningServer, str]]:
    """A server holding three studies of LIST, and the URL of its index database."""

    def start(*flags: str) -> RunningServer:
        srv: RunningServer = server_factory(*flags)  # type: ignore[operator]
        folder = tmp_path / "in"
        folder.mkdir()
        files = [write_dataset(make_dataset(replace(LIST, study=n)), folder) for n in (1, 2, 3)]
        assert {status_of(s) for s in store_files(srv.dicom_port, files).values()} == {"0x0000"}
        return srv

    if request.param == "sqlite":
        srv = start()
        yield srv, srv.database_url
        return
    for url in pg_database():
        srv = start("--database-url", url)
        yield srv, url
        srv.kill()  # before its database is dropped


def run_sql(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def assert_told_nothing_of_the_database(text: str) -> None:
    assert not [word for word in DATABASE_WORDS if word in text.lower()], text


def qido(srv: RunningServer) -> httpx.Response:
    url = f"http://127.0.0.1:{srv.http_port}/dicom-web/studies"
    return httpx.get(url, params={"PatientID": LIST.patient_id}, timeout=30)


def test_a_failing_query_is_logged_and_answered_without_the_database_text(
    small_pacs: tuple[RunningServer, str],
) -> None:
    srv, url = small_pacs
    run_sql(url, "ALTER TABLE study RENAME TO study_away")
    try:
        answer = find(srv.dicom_port, {"PatientID": LIST.patient_id, "StudyInstanceUID": ""})
        http = qido(srv)
    finally:
        run_sql(url, "ALTER TABLE study_away RENAME TO study")
    # SQLite's "no such table" is an operational error (the index is unavailable);
    # PostgreSQL's undefined table is unexpected (0x0110, PS3.7 C.4).
    comment = str(answer.final.get("ErrorComment", ""))
    assert (answer.status, comment) in ((0xA700, INDEX_UNAVAILABLE), (0x0110, UNEXPECTED))
    assert answer.responses == []
    assert http.status_code in (500, 503), http.text
    assert_told_nothing_of_the_database(http.text)
    wait_for(
        lambda: (
            "no such table: study" in srv.log() or 'relation "study" does not exist' in srv.log()
        ),
        what="the database's error in the server's log",
    )
    again = find(srv.dicom_port, {"PatientID": LIST.patient_id, "StudyInstanceUID": ""})
    assert again.status == SUCCESS
    assert sorted(str(r.StudyInstanceUID) for r in again.responses) == sorted(
        stored_uid(n) for n in (1, 2, 3)
    )


def _allow_connections(url: str, allow: bool) -> None:
    name = url.rsplit("/", 1)[1]
    run_sql(PG_ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
    if not allow:
        run_sql(
            PG_ADMIN_URL,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_database()


@pytest.mark.postgresql
def test_an_unreachable_index_is_out_of_resources_without_the_database_text(
    pg_url: str, server_factory: object
) -> None:
    srv: RunningServer = server_factory("--database-url", pg_url)  # type: ignore[operator]
    _allow_connections(pg_url, False)
    try:
        answer = find(srv.dicom_port, {"PatientID": LIST.patient_id, "StudyInstanceUID": ""})
        http = qido(srv)
    finally:
        _allow_connections(pg_url, True)
    # PS3.4 C.4.1.1.4: Refused: Out of Resources.
    assert answer.status == 0xA700
    assert str(answer.final.ErrorComment) == INDEX_UNAVAILABLE
    assert http.status_code == 503
    assert http.json()["error"]["message"] == INDEX_UNAVAILABLE
    wait_for(lambda: "index read failed: " in srv.log(), what="the reason in the log")
    assert find(srv.dicom_port, {"PatientID": LIST.patient_id}).status == SUCCESS
