"""C-MOVE and C-GET from pynetdicom's SCU: exact pending and final counts, cancel in the
middle, sub-operations that fail one by one, transcoding for a peer that takes only
explicit VR little endian, and every refused request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom import config, dcmread, uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomgen import Spec, dataset_bytes, write_as
from helpers import blob_path, index_rows, pg_database, store_files
from receiver import Receiver, config_file, free_port, received_dataset, receiver
from serving import RunningServer

MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet
FIND = StudyRootQueryRetrieveInformationModelFind
PENDING, SUCCESS, WARNING, CANCEL = 0xFF00, 0x0000, 0xB000, 0xFE00
ALL_FAILED, UNKNOWN_DESTINATION, NOT_AUTHORIZED, BAD_IDENTIFIER = 0xA702, 0xA801, 0x0124, 0xA900

Factory = Callable[..., RunningServer]


@dataclass(frozen=True)
class Response:
    status: int
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    failed_uids: tuple[str, ...]
    comment: str

    @property
    def counts(self) -> tuple[int | None, ...]:
        return (self.remaining, self.completed, self.failed, self.warning)


def response(status: Dataset, identifier: Dataset | None) -> Response:
    failed: tuple[Any, ...] = ()
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        failed = (value,) if isinstance(value, str) else tuple(value)
    return Response(
        int(status.Status),
        status.get("NumberOfRemainingSuboperations"),
        status.get("NumberOfCompletedSuboperations"),
        status.get("NumberOfFailedSuboperations"),
        status.get("NumberOfWarningSuboperations"),
        tuple(str(u) for u in failed),
        str(status.get("ErrorComment", "")),
    )


class Corpus:
    """Study 1: a series of five uncompressed instances and one of a JPEG 2000 and an RLE
    instance; study 2: one instance."""

    def __init__(self, folder: Path) -> None:
        specs = [
            (Spec("RTV", "Retrieve^Test", 1, 1, i, rows=32), uid.ExplicitVRLittleEndian)
            for i in range(1, 6)
        ]
        specs += [
            (Spec("RTV", "Retrieve^Test", 1, 2, 1, rows=32), uid.JPEG2000Lossless),
            (Spec("RTV", "Retrieve^Test", 1, 2, 2, rows=32), uid.RLELossless),
            (Spec("RTV", "Retrieve^Test", 2, 1, 1, rows=32), uid.ExplicitVRLittleEndian),
        ]
        self.files = [write_as(spec, folder, syntax) for spec, syntax in specs]
        self.headers = [dcmread(p, stop_before_pixels=True) for p in self.files]
        self.study = str(self.headers[0].StudyInstanceUID)
        self.series = str(self.headers[0].SeriesInstanceUID)
        self.compressed_series = str(self.headers[5].SeriesInstanceUID)
        self.series_uids = [str(h.SOPInstanceUID) for h in self.headers[:5]]
        self.by_uid = {
            str(h.SOPInstanceUID): p for h, p in zip(self.headers, self.files, strict=True)
        }


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_database()


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return Corpus(folder)


def serve(
    server_factory: Factory,
    tmp_path: Path,
    corpus: Corpus,
    receivers: Sequence[Receiver] = (),
    extra: str = "",
    *args: str,
) -> RunningServer:
    config = config_file(tmp_path, receivers, extra)
    srv = server_factory("--config", str(config), *args)
    statuses = store_files(srv.dicom_port, corpus.files)
    assert {int(s.Status) for s in statuses.values()} == {0}
    return srv


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    with config.disable_value_validation():  # some tests send values the VR forbids
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    return ds


@contextmanager
def scu(
    port: int,
    contexts: Sequence[str],
    *,
    ae_title: str = "PYTEST",
    get_storage: Sequence[str] = (),
    ext_neg: Sequence[Any] = (),
    on_store: Callable[[evt.Event], int] | None = None,
) -> Iterator[Association]:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(context)
    roles = []
    for syntax in get_storage:
        ae.add_requested_context(CTImageStorage, [syntax])
    if get_storage:
        roles.append(build_role(CTImageStorage, scp_role=True))
    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)] if on_store else []
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="PYPACS", ext_neg=[*roles, *ext_neg], evt_handlers=handlers
    )
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def move(port: int, query: Dataset, destination: str = "DEST", **kwargs: Any) -> list[Response]:
    with scu(port, [MOVE], **kwargs) as assoc:
        return [response(s, i) for s, i in assoc.send_c_move(query, destination, MOVE)]


class Got:
    """What a C-GET SCU received over its own association."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, bytes]] = []
        self.assoc: Association | None = None
        self.cancel_after = 0

    def on_store(self, event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        self.items.append(
            (
                str(request.AffectedSOPInstanceUID),
                str(event.context.transfer_syntax),
                cast(BytesIO, request.DataSet).getvalue(),
            )
        )
        if self.cancel_after and len(self.items) == self.cancel_after and self.assoc is not None:
            self.assoc.send_c_cancel(1, query_model=GET)
        return 0x0000


def get(
    port: int,
    query: Dataset,
    got: Got,
    syntaxes: Sequence[str] = (uid.ExplicitVRLittleEndian,),
    model: str = GET,
) -> list[Response]:
    with scu(port, [model], get_storage=syntaxes, on_store=got.on_store) as assoc:
        got.assoc = assoc
        return [response(s, i) for s, i in assoc.send_c_get(query, model)]


def assert_pending(answers: Sequence[Response], total: int) -> None:
    """Every response before the final one is Pending, one after each sub-operation, with
    counts that add up to the total and a Remaining count that goes down by one."""
    pending = answers[:-1]
    assert {a.status for a in pending} <= {PENDING}
    for a in pending:
        assert None not in a.counts
        assert sum(cast(int, c) for c in a.counts) == total
    assert [a.remaining for a in pending] == list(range(total - 1, -1, -1))


def test_move_series_counts_bytes_and_originator(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    assert_pending(answers, 5)
    assert answers[-1].status == SUCCESS
    assert answers[-1].counts == (None, 5, 0, 0)
    assert answers[-1].failed_uids == ()
    got = dest.by_uid()
    assert sorted(got) == sorted(corpus.series_uids)
    for sop_uid, item in got.items():
        assert item.data == dataset_bytes(corpus.by_uid[sop_uid])
        # PS3.7 9.3.1.1: each C-STORE names the C-MOVE's originator.
        assert item.move_originator == "PYTEST"
        assert item.transfer_syntax == uid.ExplicitVRLittleEndian


@pytest.mark.postgresql
def test_move_with_a_postgresql_index(
    server_factory: Factory, tmp_path: Path, corpus: Corpus, pg_url: str
) -> None:
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest], "", "--database-url", pg_url)
        answers = move(srv.dicom_port, identifier("STUDY", StudyInstanceUID=corpus.study))
    assert answers[-1].status == SUCCESS
    assert answers[-1].counts == (None, 7, 0, 0)
    assert len(dest.received) == 7


def test_get_series_counts_and_bytes(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    srv = serve(server_factory, tmp_path, corpus)
    got = Got()
    answers = get(
        srv.dicom_port,
        identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        got,
    )
    assert_pending(answers, 5)
    assert answers[-1].status == SUCCESS
    assert answers[-1].counts == (None, 5, 0, 0)
    assert sorted(u for u, _, _ in got.items) == sorted(corpus.series_uids)
    for sop_uid, syntax, data in got.items:
        assert syntax == uid.ExplicitVRLittleEndian
        assert data == dataset_bytes(corpus.by_uid[sop_uid])


def test_get_cancelled_in_the_middle(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    srv = serve(server_factory, tmp_path, corpus)
    got = Got()
    got.cancel_after = 2
    answers = get(
        srv.dicom_port,
        identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        got,
    )
    assert len(got.items) == 2
    assert answers[-1].status == CANCEL
    # PS3.4 C.4.3.3.1: Cancel carries the counts so far; Remaining is what never started.
    assert answers[-1].counts == (3, 2, 0, 0)


def test_move_cancelled_in_the_middle(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    holder: dict[str, Association] = {}
    cancelled = threading.Event()

    def status_for(_uid: str, n: int) -> int:
        if n == 2:
            holder["assoc"].send_c_cancel(1, query_model=MOVE)
            cancelled.set()
            time.sleep(0.3)  # let the C-CANCEL reach pypacs before this C-STORE response
        return 0x0000

    with receiver(status_for=status_for) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        with scu(srv.dicom_port, [MOVE]) as assoc:
            holder["assoc"] = assoc
            query = identifier(
                "SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series
            )
            answers = [response(s, i) for s, i in assoc.send_c_move(query, "DEST", MOVE)]
    assert cancelled.is_set()
    assert len(dest.received) == 2
    assert answers[-1].status == CANCEL
    assert answers[-1].counts == (3, 2, 0, 0)


def test_one_refused_instance_fails_alone(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    refused = corpus.series_uids[2]
    with receiver(status_for=lambda u, _n: 0xA700 if u == refused else 0x0000) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    final = answers[-1]
    assert final.status == WARNING
    assert final.counts == (None, 4, 1, 0)
    assert final.failed_uids == (refused,)
    assert_pending(answers, 5)


def test_warning_statuses_are_counted_as_warnings(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    with receiver(status_for=lambda _u, n: 0xB000 if n == 1 else 0x0000) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    assert answers[-1].status == WARNING
    assert answers[-1].counts == (None, 4, 0, 1)
    assert answers[-1].failed_uids == ()


def test_all_refused_is_a_failure(server_factory: Factory, tmp_path: Path, corpus: Corpus) -> None:
    with receiver(status_for=lambda _u, _n: 0xC000) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    assert answers[-1].status == ALL_FAILED
    assert answers[-1].counts == (None, 0, 5, 0)
    assert sorted(answers[-1].failed_uids) == sorted(corpus.series_uids)


def test_a_missing_blob_fails_that_instance_only(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        lost = corpus.series_uids[1]
        row = next(
            r for r in index_rows(srv.database_url, "instance") if r["sop_instance_uid"] == lost
        )
        blob_path(srv.data, row["blob_key"]).unlink()
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    assert answers[-1].status == WARNING
    assert answers[-1].counts == (None, 4, 1, 0)
    assert answers[-1].failed_uids == (lost,)
    assert sorted(dest.by_uid()) == sorted(set(corpus.series_uids) - {lost})
    assert f"sub-operation for {lost} failed" in srv.log()


def test_nothing_matching_is_success_with_no_sub_operations(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(srv.dicom_port, identifier("STUDY", StudyInstanceUID="1.2.3.4.5"))
        got = Got()
        got_answers = get(srv.dicom_port, identifier("STUDY", StudyInstanceUID="1.2.3.4.5"), got)
    for final in (answers, got_answers):
        assert [(a.status, a.counts) for a in final] == [(SUCCESS, (None, 0, 0, 0))]
    assert dest.received == [] and got.items == []


def test_unknown_and_unreachable_destinations(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    closed = Receiver(free_port(), "CLOSED")
    srv = serve(server_factory, tmp_path, corpus, [closed])
    query = identifier("STUDY", StudyInstanceUID=corpus.study)
    unknown = move(srv.dicom_port, query, destination="NOBODY")
    assert [(a.status, a.comment) for a in unknown] == [
        (UNKNOWN_DESTINATION, "unknown move destination 'NOBODY'")
    ]
    unreachable = move(srv.dicom_port, query, destination="CLOSED")
    assert [a.status for a in unreachable] == [ALL_FAILED]
    assert unreachable[0].comment.startswith("CLOSED at 127.0.0.1:")
    assert unreachable[0].comment.endswith("refused or did not answer")


@pytest.mark.parametrize(
    ("level", "keys", "why"),
    [
        ("STUDY", {}, "StudyInstanceUID must name what to retrieve"),
        ("STUDY", {"StudyInstanceUID": "1.2.*"}, "(0020,000D) is not a UID: '1.2.*'"),
        ("STUDY", {"StudyInstanceUID": "1.2.x!"}, "(0020,000D) is not a UID: '1.2.x!'"),
        ("SERIES", {"SeriesInstanceUID": "1.2.3"}, "StudyInstanceUID must be a single value"),
        ("WARD", {"StudyInstanceUID": "1.2.3"}, "not a level"),
        ("PATIENT", {"PatientID": "X"}, "not part of the STUDY_ROOT model"),
    ],
    ids=["no-uid", "wildcard", "malformed-uid", "hierarchical", "bad-level", "level-not-in-model"],
)
def test_refused_identifiers(
    server_factory: Factory,
    tmp_path: Path,
    corpus: Corpus,
    level: str,
    keys: dict[str, str],
    why: str,
) -> None:
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(srv.dicom_port, identifier(level, **keys))
    assert [a.status for a in answers] == [BAD_IDENTIFIER]
    assert why in answers[0].comment
    assert dest.received == []


def test_relational_retrieve_when_negotiated(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    srv = serve(server_factory, tmp_path, corpus)
    query = identifier("SERIES", SeriesInstanceUID=corpus.series)
    hierarchical = get(srv.dicom_port, query, Got())
    assert [a.status for a in hierarchical] == [BAD_IDENTIFIER]
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = GET
    item.service_class_application_information = b"\x01"
    got = Got()
    with scu(
        srv.dicom_port,
        [GET],
        get_storage=[uid.ExplicitVRLittleEndian],
        ext_neg=[item],
        on_store=got.on_store,
    ) as assoc:
        answers = [response(s, i) for s, i in assoc.send_c_get(query, GET)]
    assert answers[-1].status == SUCCESS
    assert sorted(u for u, _, _ in got.items) == sorted(corpus.series_uids)


def test_only_allowed_callers_retrieve(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    # Strangers may store and find, not move; the remote VIEWER may do everything.
    access = (
        '[access]\nunknown_callers = ["echo", "store", "find"]\n'
        f'[remotes.viewer]\nae_title = "VIEWER"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )
    with receiver() as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest], access)
        query = identifier("STUDY", StudyInstanceUID=corpus.study)
        with scu(srv.dicom_port, [MOVE, FIND]) as assoc:
            # PS3.8 9.3.3.2: the C-MOVE context is answered user-rejection (1).
            refused = [(cx.abstract_syntax, cx.result) for cx in assoc.rejected_contexts]
            accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
        allowed = move(srv.dicom_port, query, ae_title="VIEWER")
    assert (refused, accepted) == ([(MOVE, 1)], [FIND])
    assert allowed[-1].status == SUCCESS
    assert len(dest.received) == 7


def test_transcoded_for_a_destination_taking_explicit_little_endian_only(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    with receiver(syntaxes=[uid.ExplicitVRLittleEndian]) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier(
                "SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.compressed_series
            ),
        )
    assert answers[-1].status == SUCCESS
    assert answers[-1].counts == (None, 2, 0, 0)
    assert len(dest.received) == 2
    for item in dest.received:
        assert item.transfer_syntax == uid.ExplicitVRLittleEndian
        original = dcmread(corpus.by_uid[item.sop_instance_uid])
        assert read_file_meta_info(corpus.by_uid[item.sop_instance_uid]).TransferSyntaxUID in (
            uid.JPEG2000Lossless,
            uid.RLELossless,
        )
        arrived = received_dataset(item)
        arrived.file_meta = FileMetaDataset()
        arrived.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        assert (arrived.pixel_array == original.pixel_array).all()
        assert arrived.SOPInstanceUID == original.SOPInstanceUID
        assert arrived.PatientName == original.PatientName


def test_get_with_no_context_for_the_stored_class_fails_each(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    srv = serve(server_factory, tmp_path, corpus)
    got = Got()
    answers = get(
        srv.dicom_port,
        identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        got,
        syntaxes=(),
    )
    assert answers[-1].status == ALL_FAILED
    assert answers[-1].counts == (None, 0, 5, 0)
    assert sorted(answers[-1].failed_uids) == sorted(corpus.series_uids)
    assert got.items == []


def test_get_on_the_patient_root_model(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    srv = serve(server_factory, tmp_path, corpus)
    wildcard = get(
        srv.dicom_port,
        identifier("PATIENT", PatientID="RT*"),
        Got(),
        model=PatientRootQueryRetrieveInformationModelGet,
    )
    assert [(a.status, a.comment) for a in wildcard] == [
        (BAD_IDENTIFIER, "PatientID in a retrieve takes exact values only")
    ]
    got = Got()
    answers = get(
        srv.dicom_port,
        identifier("PATIENT", PatientID="RTV"),
        got,
        model=PatientRootQueryRetrieveInformationModelGet,
    )
    assert answers[-1].status == SUCCESS
    assert answers[-1].counts == (None, 8, 0, 0)
    assert sorted(u for u, _, _ in got.items) == sorted(corpus.by_uid)


def test_moves_wait_for_a_free_outgoing_association(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    def slow(_uid: str, _n: int) -> int:
        time.sleep(0.05)  # keeps each move's association open while the others ask
        return 0x0000

    with receiver(status_for=slow) as dest:
        srv = serve(
            server_factory, tmp_path, corpus, [dest], "[retrieve]\nmax_move_associations = 1"
        )
        query = identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series)
        results: list[list[Response]] = []
        threads = [
            threading.Thread(target=lambda: results.append(move(srv.dicom_port, query)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [r[-1].status for r in results] == [SUCCESS] * 3
    assert len(dest.received) == 15
    assert dest.most_at_once == 1


def test_a_pending_response_follows_each_sub_operation(
    server_factory: Factory, tmp_path: Path, corpus: Corpus
) -> None:
    # PS3.4 C.4.2.3.1: GDCM's gdcmscu waits for one after each C-STORE it takes part in.
    def first_fails(uid_: str, _n: int) -> int:
        return 0xA700 if uid_ == corpus.series_uids[0] else 0x0000

    with receiver(status_for=first_fails) as dest:
        srv = serve(server_factory, tmp_path, corpus, [dest])
        answers = move(
            srv.dicom_port,
            identifier("SERIES", StudyInstanceUID=corpus.study, SeriesInstanceUID=corpus.series),
        )
    assert len(answers) == 6
    assert_pending(answers, 5)
    # The first instance failed: every pending response after it counts it.
    assert [a.counts for a in answers] == [
        (4, 0, 1, 0),
        (3, 1, 1, 0),
        (2, 2, 1, 0),
        (1, 3, 1, 0),
        (0, 4, 1, 0),
        (None, 4, 1, 0),
    ]
