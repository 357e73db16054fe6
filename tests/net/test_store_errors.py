"""C-STORE of bad input: the exact failure status, nothing left behind, the server serving on.

PS3.4 B.2.3 gives the statuses: 0xA700 Refused (out of resources), 0xA900 Error (data set
does not match SOP class), 0xC000 Error (cannot understand).
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from dicomgen import Spec, dataset_bytes, make_dataset, uid, write, write_dataset, write_part10
from helpers import (
    PG_ADMIN_URL,
    SUCCESS,
    assert_nothing_stored,
    association,
    association_lines,
    blob_files,
    c_store_pdus,
    echo,
    index_counts,
    pg_database,
    status_of,
    store_files,
    tmp_files,
    wait_for,
)
from serving import RunningServer, start_pypacs

OUT_OF_RESOURCES = "0xA700"
DOES_NOT_MATCH_SOP_CLASS = "0xA900"
CANNOT_UNDERSTAND = "0xC000"
MiB = 1024 * 1024


def store_one(server: RunningServer, path: Path) -> Dataset:
    return store_files(server.dicom_port, [path])[path]


def assert_still_serving(server: RunningServer) -> None:
    assert server.proc.poll() is None
    assert echo(server.dicom_port) == SUCCESS
    assert "Traceback" not in server.log()


def good_file(folder: Path, instance: int = 1, rows: int = 64) -> Path:
    return write(Spec("ERR1", "Error^Case", 1, 1, instance, rows=rows), folder)


# -- datasets that do not parse ---------------------------------------------------------


def _unparsable_bodies(good: bytes) -> dict[str, bytes]:
    return {
        # A sequence of undefined length whose item is cut off: pydicom itself gives up.
        "sequence cut short": b"\x08\x00\x16\x00UI\x04\x001.2\x00\x08\x00\x18\x00SQ\x00\x00"
        + b"\xff\xff\xff\xff\x01\x02",
        # Text: its first "element" declares ~540 MB that are not there.
        "text": b"this is not a DICOM data set " * 4,
        # A well-formed start, cut off in the middle of an element's value.
        "value cut short": good[:300],
        # Every attribute present, the pixel data 4000 bytes shorter than it declares.
        "pixel data cut short": good[:-4000],
    }


UNPARSABLE = ["sequence cut short", "text", "value cut short", "pixel data cut short"]


@pytest.mark.parametrize("case", UNPARSABLE)
def test_dataset_that_does_not_parse_is_cannot_understand(
    server: RunningServer, tmp_path: Path, case: str
) -> None:
    good = good_file(tmp_path)
    body = _unparsable_bodies(dataset_bytes(good))[case]
    bad = write_part10(tmp_path / "bad.dcm", read_file_meta_info(good), body)

    status = store_one(server, bad)

    assert status_of(status) == CANNOT_UNDERSTAND
    assert str(status.ErrorComment).startswith("dataset does not parse: ")
    assert_nothing_stored(server.data, server.database_url)
    assert_still_serving(server)


# -- datasets that do not match the SOP class or the request ----------------------------


@pytest.mark.parametrize(
    "keyword", ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID"]
)
def test_dataset_lacking_a_required_uid_is_refused(
    server: RunningServer, tmp_path: Path, keyword: str
) -> None:
    ds = make_dataset(Spec("ERR2", "Missing^Uid", 1, 1, 1))
    delattr(ds, keyword)
    path = write_dataset(ds, tmp_path)
    meta = read_file_meta_info(path)
    assert (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID) == (
        CTImageStorage,
        ExplicitVRLittleEndian,
    )

    status = store_one(server, path)

    assert status_of(status) == DOES_NOT_MATCH_SOP_CLASS
    assert status.ErrorComment == f"dataset lacks {keyword}"
    assert (
        f"C-STORE from PYTEST of {ds.file_meta.MediaStorageSOPInstanceUID} refused with "
        f"0xA900: dataset lacks {keyword}" in server.log()
    )
    assert_nothing_stored(server.data, server.database_url)
    assert_still_serving(server)


@pytest.mark.parametrize("attribute", ["SOPInstanceUID", "SOPClassUID"])
def test_dataset_disagreeing_with_the_request_is_refused(
    server: RunningServer, tmp_path: Path, attribute: str
) -> None:
    ds = make_dataset(Spec("ERR3", "Other^Uid", 1, 1, 1))
    announced = str(ds.SOPInstanceUID)
    if attribute == "SOPInstanceUID":
        ds.SOPInstanceUID = uid(999, 1)
        expected = f"dataset SOP Instance UID {uid(999, 1)} differs from the request's {announced}"
    else:
        ds.SOPClassUID = MRImageStorage
        expected = (
            f"dataset SOP Class UID {MRImageStorage} differs from the request's {CTImageStorage}"
        )
    announced_meta = ds.file_meta
    # The file meta announces what the C-STORE request will; the dataset says otherwise.
    path = write_part10(
        tmp_path / "disagreeing.dcm", announced_meta, dataset_bytes(write_dataset(ds, tmp_path))
    )
    meta = read_file_meta_info(path)
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == (
        CTImageStorage,
        announced,
    )

    status = store_one(server, path)

    assert status_of(status) == DOES_NOT_MATCH_SOP_CLASS
    assert status.ErrorComment == expected[:64]  # LO: 64 characters at most
    assert_nothing_stored(server.data, server.database_url)
    assert_still_serving(server)


# -- out of resources -------------------------------------------------------------------


def _two_mib_files() -> None:
    """In the server's child process: no file may grow past 2 MiB, and exceeding the limit
    is an EFBIG error rather than a fatal signal."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB, 2 * MiB))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.fixture
def small_disk_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_pypacs(tmp_path / "data", preexec=_two_mib_files)
    yield srv
    srv.kill()


def test_disk_full_is_out_of_resources(small_disk_server: RunningServer, tmp_path: Path) -> None:
    server = small_disk_server
    big = good_file(tmp_path, instance=1, rows=1449)
    assert big.stat().st_size > 4 * MiB

    status = store_one(server, big)

    assert status_of(status) == OUT_OF_RESOURCES
    assert str(status.ErrorComment).startswith("no room left in the blob store")
    assert_nothing_stored(server.data, server.database_url)
    assert_still_serving(server)

    small = good_file(tmp_path, instance=2)
    assert status_of(store_one(server, small)) == SUCCESS
    assert index_counts(server.database_url)["instance"] == 1
    assert len(blob_files(server.data)) == 1
    assert tmp_files(server.data) == []


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_database()


def _allow_connections(url: str, allow: bool) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name"
                    ),
                    {"name": name},
                )
    finally:
        admin.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("extra", "comment"),
    [
        # The duplicate look-up fails first: no blob is ever written.
        ([], "index unavailable: "),
        # Duplicates overwrite, so no look-up: the blob is written, the index write
        # fails, and the blob must be revoked.
        (["--overwrite-duplicates", "true"], "index write failed: "),
    ],
    ids=["lookup-fails", "write-fails"],
)
def test_index_unavailable_is_out_of_resources(
    pg_url: str, server_factory: object, tmp_path: Path, extra: list[str], comment: str
) -> None:
    server: RunningServer = server_factory("--database-url", pg_url, *extra)  # type: ignore[operator]
    first, second = good_file(tmp_path, 1), good_file(tmp_path, 2)
    assert status_of(store_one(server, first)) == SUCCESS

    _allow_connections(pg_url, False)
    try:
        status = store_one(server, second)
        assert status_of(status) == OUT_OF_RESOURCES
        assert str(status.ErrorComment).startswith(comment)
        assert len(blob_files(server.data)) == 1
        assert tmp_files(server.data) == []
        assert_still_serving(server)
    finally:
        _allow_connections(pg_url, True)

    assert status_of(store_one(server, second)) == SUCCESS
    assert index_counts(pg_url) == {"patient": 1, "study": 1, "series": 1, "instance": 2}
    assert len(blob_files(server.data)) == 2


# -- broken associations ----------------------------------------------------------------


def test_peer_dropping_the_connection_mid_dataset_leaves_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    path = good_file(tmp_path, rows=128)
    meta = read_file_meta_info(path)
    with association(
        server.dicom_port, [(CTImageStorage, ExplicitVRLittleEndian)], ae_title="DROPPER"
    ) as assoc:
        assert assoc.is_established
        pdus = c_store_pdus(
            assoc,
            CTImageStorage,
            str(meta.MediaStorageSOPInstanceUID),
            dataset_bytes(path),
            fragment=4096,
        )
        assert len(pdus) > 5  # the command, then the dataset in several fragments
        transport = assoc.dul.socket
        assert transport is not None
        # The command and two dataset fragments, then half of the third; then close.
        transport.send(b"".join(pdus[:3]) + pdus[3][: len(pdus[3]) // 2])
        transport.close()
        wait_for(lambda: not assoc.is_alive(), what="the SCU's association to end")

    lines = wait_for(
        lambda: association_lines(server.log(), "DROPPER"), what="the association log line"
    )
    assert ": nothing; " in lines[0]
    assert_nothing_stored(server.data, server.database_url)
    assert_still_serving(server)
    assert status_of(store_one(server, path)) == SUCCESS
    assert index_counts(server.database_url)["instance"] == 1


def test_association_of_unsupported_sop_classes_only(server: RunningServer) -> None:
    # Under the standard's root but outside its storage branch: no service pypacs offers
    # (a private or unknown storage class would be stored, see test_real_files.py).
    made_up = ["1.2.840.10008.9.9.9.1", "1.2.840.10008.9.9.9.2"]
    with association(
        server.dicom_port,
        [(abstract, ExplicitVRLittleEndian) for abstract in made_up],
        ae_title="ODDSCU",
    ) as assoc:
        assert not assoc.is_established
        assert assoc.accepted_contexts == []
        # PS3.8 9.3.3.2: result 3, abstract syntax not supported.
        assert sorted((cx.abstract_syntax, cx.result) for cx in assoc.rejected_contexts) == [
            (abstract, 0x03) for abstract in made_up
        ]

    lines = wait_for(
        lambda: association_lines(server.log(), "ODDSCU"), what="the association log line"
    )
    assert len(lines) == 1
    assert ": nothing; " in lines[0]
    assert_still_serving(server)
