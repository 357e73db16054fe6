"""class Archive: the service the DIMSE and HTTP front doors call."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from pypacs.archive.accounts import Accounts
from pypacs.archive.ingest import AnyHeader, Expectation, build_record, read_header
from pypacs.archive.jobs import JobLedger
from pypacs.archive.metadata import InstanceAttributes, instance_attributes
from pypacs.archive.options import ArchiveOptions
from pypacs.archive.outgoing import Form, Outgoing, prepare
from pypacs.archive.part10 import file_meta
from pypacs.archive.receive import Receiving
from pypacs.archive.reserve import SpaceReserve
from pypacs.archive.retrieve import Retrieval, StoredInstance
from pypacs.errors import (
    IndexConflict,
    IndexUnavailable,
    InvalidInstance,
    InvalidKind,
    NotFound,
    OutOfResources,
    StoreError,
)
from pypacs.index import activity, deletes, reads, tx
from pypacs.index.deletes import Removed
from pypacs.index.engine import close_engine, make_engine
from pypacs.index.migrations import migrate
from pypacs.index.writes import InstanceRecord, Outcome, WriteResult, is_stored, upsert_instance
from pypacs.query.encode import IdentifierEncoder
from pypacs.query.entity import EntityRef
from pypacs.query.respond import (
    ResponseContext,
    Row,
    build_identifier,
    build_json,
    passes_residual,
)
from pypacs.query.to_sql import (
    Compiled,
    compile_attributes,
    compile_count,
    compile_locate,
    compile_query,
)
from pypacs.query.types import Query, TooManyMatches
from pypacs.store import BlobKey, BlobStore, open_store
from pypacs.store.base import PendingBlob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    """What a store did with an instance, and the instance's place in the hierarchy."""

    sop_instance_uid: str
    sop_class_uid: str
    outcome: Outcome
    conflicts: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""  # as received: for the audit trail's Patient participant


def _result(
    header: AnyHeader,
    outcome: Outcome,
    conflicts: list[tuple[str, str | None, str | None]] | None = None,
) -> StoreResult:
    ident = header.identity
    return StoreResult(
        header.sop_instance_uid,
        header.sop_class_uid,
        outcome,
        conflicts or [],
        ident.study or "",
        ident.series or "",
        header.patient_id,
    )


class Archive:
    """Stores, indexes and finds instances; thread-safe, one per process."""

    def __init__(self, engine: Engine, store: BlobStore, options: ArchiveOptions) -> None:
        self.engine = engine
        self.store = store
        self.options = options
        self._writer = tx.GroupWriter(engine)
        # Studies sent to peers (remote/jobs.py), held by a node through a lease.
        self.jobs = JobLedger(engine, options.job_lease_seconds)
        self.accounts = Accounts(engine)  # the HTTP port's users (web/http/auth.py)
        self.reserve = SpaceReserve(Path(options.reserve_path), options.reserve_bytes)
        self.reserve.ensure()

    @classmethod
    def open(cls, options: ArchiveOptions) -> Archive:
        """Open the index (migrating it to the latest schema) and the blob store."""
        engine = make_engine(options.database_url, pool_size=options.database_pool_size)
        migrate(engine)
        store = open_store(
            options.blob_url or options.blob_root,
            fsync=options.fsync,
            # A grace period means other nodes may write the same blobs (config/settings.py).
            shared=options.orphan_grace_seconds > 0,
            endpoint_url=options.s3_endpoint_url,
            region=options.s3_region,
        )
        return cls(engine, store, options)

    def close(self) -> None:
        self._writer.close()
        self.store.close()
        try:
            close_engine(self.engine)
        except OperationalError as exc:  # e.g. a full disk: the log stays, folded in later
            log.warning("index not checkpointed on close: %s", exc.orig)

    def store_instance(
        self,
        data: bytes | memoryview | BinaryIO,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        expected_study: str | None = None,
        allowed_syntaxes: Collection[str] | None = None,
    ) -> StoreResult:
        """Keep a DICOM file's bytes as they are and index it; return once both are durable.

        ``data`` may be a seekable file (``spool``): it is copied a chunk at a time and only
        its header is parsed, so memory does not grow with its size.

        What the caller expects is checked in the one parse of the header: the SOP Class and
        Instance UIDs a request announced, the study a request names, the transfer syntaxes
        the door stores (archive/ingest.py ``read_header`` says in which order).

        Raises:
            InvalidInstance: the data does not parse, lacks a required UID, or is not what
                the caller expects; its ``kind`` says which.
            OutOfResources: no room for the blob, or the index is unavailable.
            StoreError: the blob could not be written.
        """
        expect = Expectation(
            expected_sop_class, expected_sop_instance, expected_study, allowed_syntaxes
        )
        header = read_header(data, expect)
        if not self.options.overwrite_duplicates and self.is_held(header.sop_instance_uid):
            return _result(header, Outcome.DUPLICATE)
        self._check_room()
        key, size = self.store.put(_chunks(data))
        return self._index(header, key, size, replace=self.options.overwrite_duplicates)

    def receive(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        *,
        source_ae_title: str | None = None,
    ) -> Receiving:
        """An instance to receive a piece at a time (a C-STORE's data set as it arrives),
        written behind the File Meta Information pypacs writes (archive/part10.py) straight
        into the file that becomes its blob; ``Receiving.finish`` stores it.

        Raises:
            StoreError: the file cannot be started.
        """
        meta = file_meta(
            sop_class_uid, sop_instance_uid, transfer_syntax_uid, source_ae_title=source_ae_title
        )
        return Receiving(self, self.store.begin, meta, self.options.max_instance_bytes)

    def _store_received(self, header: AnyHeader, pending: PendingBlob) -> StoreResult:
        """A received instance's file made durable and indexed (``Receiving.finish``); the
        caller drops ``pending`` if it is not kept (a duplicate, a failure)."""
        if not self.options.overwrite_duplicates and self.is_held(header.sop_instance_uid):
            return _result(header, Outcome.DUPLICATE)
        self._check_room()
        # The index row is written while the blob's folder is fsynced; the answer waits
        # for both: success only once file, folder and row are durable.
        key, size = pending.place()
        try:
            result = self._index(header, key, size, replace=self.options.overwrite_duplicates)
        except BaseException:
            with suppress(StoreError):
                pending.settle()
            raise
        try:
            pending.settle()
        except StoreError as exc:
            # Indexed and readable, but not known durable: the sender is told it failed
            # and may send it again (a duplicate then, answered as stored).
            log.error("blob %s of %s not made durable: %s", key, header.sop_instance_uid, exc)
            raise
        return result

    def is_held(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this SOP Instance UID is stored.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        return tx.lookup(self.engine, lambda conn: is_stored(conn, sop_instance_uid))

    def spool(self) -> BinaryIO:
        """An anonymous temporary file on the blob store's disk where it is a folder (else in
        the system's temporary folder) to receive an instance into before ``store_instance``;
        it disappears when closed, or with the process."""
        root = Path(self.options.blob_root)
        return tempfile.TemporaryFile(dir=root if root.is_dir() else None)

    def _check_room(self) -> None:
        """Stores wait while the space reserve is given up (archive/reserve.py).

        Raises:
            OutOfResources: the disk is full and its reserve is in use.
        """
        if not self.reserve.ensure():
            raise OutOfResources("disk full: the reserve is kept for deletes; delete to make room")

    def _index(self, header: AnyHeader, key: BlobKey, size: int, *, replace: bool) -> StoreResult:
        record = build_record(header, key, size)
        try:
            result = self._submit(record, replace)
        except Exception as exc:
            # Two-phase write: the index refused, so the blob is revoked.
            self._revoke(key)
            # The database's own text stays in the log (index/tx.py), never in an answer.
            log.error("index write of %s failed: %s", header.sop_instance_uid, exc)
            raise OutOfResources(f"index write failed: {tx.REASON_IN_LOG}") from exc
        if result.outcome is Outcome.DUPLICATE:
            self._revoke(key)  # another association stored the same instance first
        elif result.previous_blob is not None:
            self._revoke(BlobKey(result.previous_blob))
        if result.conflicts:
            described = "; ".join(
                f"{name} stored {old!r} received {new!r}" for name, old, new in result.conflicts
            )
            log.warning(
                "patient %r: instance %s brings demographics that differ from the stored "
                "patient (%s); the patient keeps its stored values",
                header.patient_id,
                header.sop_instance_uid,
                described,
            )
        return _result(header, result.outcome, result.conflicts)

    def _submit(self, record: InstanceRecord, replace: bool) -> WriteResult:
        # Another node may insert the same patient, study or series between our look-up and
        # our insert (PostgreSQL, several nodes); the retry then finds the row.
        for attempt in range(3):
            try:
                # A new instance's rows are recoverable from its durable file (start-up's
                # check re-indexes it); a replacement is not: the old blob goes next.
                return self._writer.submit(
                    lambda conn: upsert_instance(conn, record, replace=replace),
                    recoverable=not replace,
                )
            except IndexConflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _revoke(self, key: BlobKey) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:  # left for `pypacs check` to find and re-index
            log.error("could not remove blob %s: %s", key, exc)

    def store_file(self, path: Path) -> StoreResult:
        """Import one file from disk, as received.

        Raises:
            InvalidInstance, OutOfResources, StoreError: as for ``store_instance``.
        """
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInstance(
                f"cannot read {path}: {exc.strerror}", InvalidKind.UNPARSABLE
            ) from exc
        return self.store_instance(data)

    def reindex_blob(self, key: BlobKey) -> StoreResult:
        """Index a blob that is in the store but not in the index (after a crash).

        Raises:
            InvalidInstance: the blob is not an instance the archive can index.
        """
        with self.store.open(key) as fp:
            data = fp.read()
        header = read_header(data)
        # A blob found after a crash never replaces what the index already holds.
        return self._index(header, key, len(data), replace=False)

    def find(
        self, query: Query, context: ResponseContext, *, sql_matching: bool = True
    ) -> Generator[Dataset, None, None]:
        """Response identifiers of the entities matching ``query``, streamed.

        ``sql_matching=False`` matches every key in Python over the stored attributes
        instead of in SQL: slower, same answers (the property tests hold both to that).

        Raises:
            TooManyMatches: after ``query.max_results`` identifiers, when more match.
            IndexUnavailable: the index cannot be read.
        """
        for compiled, row in self._matches(query, sql_matching):
            yield build_identifier(query, compiled, row, context)

    def find_encoded(
        self,
        query: Query,
        context: ResponseContext,
        transfer_syntax: str,
        *,
        sql_matching: bool = True,
    ) -> Generator[bytes, None, None]:
        """The identifiers ``find`` yields, each already encoded in ``transfer_syntax`` (the
        C-FIND context's), straight from the index row (query/encode.py), streamed.

        Raises:
            ValueError: ``transfer_syntax`` is not a transfer syntax (before any match).
            TooManyMatches, IndexUnavailable: as for ``find``.
        """
        encode = IdentifierEncoder(query, context, transfer_syntax)
        for compiled, row in self._matches(query, sql_matching):
            yield encode(compiled, row)

    def search(
        self, query: Query, context: ResponseContext
    ) -> Generator[dict[str, Any], None, None]:
        """The same matches as ``find``, each as a DICOM JSON object (QIDO-RS).

        Raises:
            TooManyMatches, IndexUnavailable: as for ``find``.
        """
        for compiled, row in self._matches(query, True):
            yield build_json(query, compiled, row, context)

    def _matches(
        self, query: Query, sql_matching: bool
    ) -> Generator[tuple[Compiled, Row], None, None]:
        compiled = compile_query(query, sql_matching=sql_matching)
        residual = bool(compiled.residual) or compiled.combined_residual is not None
        skip = query.offset if residual else 0
        limit = query.limit
        sent = 0
        # One snapshot per query; a database that fails is IndexUnavailable (index/tx.py).
        with tx.snapshot(self.engine) as conn:
            for mapping in reads.stream(conn, compiled.statement):
                row = Row(compiled, cast(Mapping[str, Any], mapping))
                if residual and not passes_residual(compiled, row):
                    continue
                if skip:
                    skip -= 1
                    continue
                if query.max_results and sent == query.max_results:
                    noun = "match" if query.max_results == 1 else "matches"
                    raise TooManyMatches(f"more than {query.max_results} {noun}; refine the query")
                yield compiled, row
                sent += 1
                if limit and sent == limit:
                    return

    @contextmanager
    def retrieve(self, query: Query) -> Iterator[Retrieval]:
        """The instances under the entities ``query`` names (a retrieve identifier):
        counted, then streamed, from one snapshot of the index.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        located = compile_locate(query)
        with tx.snapshot(self.engine) as conn:
            count = int(conn.execute(located.count).scalar_one())
            syntaxes = [(str(c), str(t)) for c, t in conn.execute(located.syntaxes)]
            rows = reads.stream(conn, located.instances)
            yield Retrieval(
                count,
                syntaxes,
                (
                    StoredInstance(
                        row["sop_instance_uid"],
                        row["sop_class_uid"],
                        row["transfer_syntax_uid"],
                        row["blob_key"],
                        row["blob_size"],
                    )
                    for row in rows
                ),
            )

    def read_instance(self, stored: StoredInstance) -> bytes:
        """The stored Part 10 file of an instance, as received.

        Raises:
            StoreError: the blob is missing, unreadable or not of its recorded size.
        """
        try:
            with self.store.open(BlobKey(stored.blob_key)) as fp:
                data = fp.read()
        except OSError as exc:
            raise StoreError(f"cannot read the stored {stored.sop_instance_uid}: {exc}") from exc
        if len(data) != stored.size:
            raise StoreError(
                f"stored {stored.sop_instance_uid} has {len(data)} bytes, {stored.size} recorded"
            )
        return data

    def open_instance(self, stored: StoredInstance) -> BinaryIO:
        """The stored Part 10 file of an instance as a seekable file, read where it is
        asked (by ranges in an object store): for readers that need only a part of it.

        Raises:
            StoreError: the blob is missing, unreadable or not of its recorded size.
        """
        fp = self.store.open(BlobKey(stored.blob_key))
        try:
            size = fp.seek(0, 2)
            fp.seek(0)
        except OSError as exc:
            fp.close()
            raise StoreError(f"cannot read the stored {stored.sop_instance_uid}: {exc}") from exc
        if size != stored.size:
            fp.close()
            raise StoreError(
                f"stored {stored.sop_instance_uid} has {size} bytes, {stored.size} recorded"
            )
        return fp

    def outgoing(
        self,
        stored: StoredInstance,
        accepted: Sequence[str],
        form: Form = Form.DATASET,
        *,
        source_ae_title: str | None = None,
    ) -> Outgoing:
        """What to send for ``stored`` to a receiver that accepts ``accepted`` (in order of
        preference): the stored bytes when it accepts their syntax, else transcoded
        (archive/outgoing.py).

        Raises:
            TranscodeError: nothing acceptable can be made from the stored instance.
            StoreError: the blob is missing, unreadable or not a Part 10 file.
        """
        blob = self.read_instance(stored)
        return prepare(blob, stored, accepted, form, source_ae_title=source_ae_title)

    def statistics(self) -> reads.Statistics:
        return tx.read(self.engine, reads.statistics)

    def count(self, query: Query) -> int | None:
        """How many entities match ``query`` whatever its limit and offset; ``None`` when a
        key is matched only in Python (a count would read every candidate).

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        statement = compile_count(query)
        if statement is None:
            return None
        return tx.read(self.engine, lambda conn: int(conn.execute(statement).scalar_one()))

    def received_per_bucket(self, since: str, bucket: str) -> dict[str, int]:
        """Instances stored since ``since`` (ISO text) by ``bucket`` ("minute" or "hour")."""
        return tx.read(
            self.engine, partial(activity.received_per_bucket, since=since, bucket=bucket)
        )

    def demographics_conflicts(
        self, limit: int, offset: int
    ) -> tuple[int, list[activity.Conflict]]:
        """The recorded demographics conflicts (their number, one page, the newest first)."""
        return tx.read(self.engine, partial(activity.conflicts, limit=limit, offset=offset))

    @contextmanager
    def attributes(self, query: Query) -> Iterator[Iterator[InstanceAttributes]]:
        """The stored attributes of the instances under the entities ``query`` names (a
        retrieve identifier), in retrieve order, from one snapshot of the index; no blob
        is opened.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        statement = compile_attributes(query)
        with tx.snapshot(self.engine) as conn:
            yield instance_attributes(reads.stream(conn, statement))

    def locate(self, ref: EntityRef) -> StoredInstance:
        """The one stored instance an instance's ``ref`` names.

        Raises:
            NotFound: the archive does not hold it.
            IndexUnavailable: the index cannot be read.
        """
        with self.retrieve(ref.query()) as retrieval:
            stored = next(retrieval.instances, None)
        if stored is None:
            raise NotFound(f"no {ref}")
        return stored

    def delete(self, ref: EntityRef) -> Removed:
        """Remove a study, a series of it, or an instance of that series: index rows first
        (parents left empty go too, derived values are recomputed), then the blobs. See
        index/deletes.py for why that order and what a crash in between leaves.

        Raises:
            NotFound: the entity is not in the archive.
            IndexUnavailable: the index cannot be written.
        """

        def remove(conn: Connection) -> Removed | None:
            return deletes.delete_entity(conn, ref.study, ref.series, ref.instance)

        # A store into the same branch may commit meanwhile (PostgreSQL): the retry sees it.
        # A full disk refuses the index's own writes: the space reserve is given up for them.
        released = False
        for attempt in range(3):
            try:
                removed = self._writer.submit(remove)
                break
            except IndexConflict:
                if attempt == 2:
                    raise
            except IndexUnavailable:
                if released or not self.reserve.release():
                    raise
                released = True
        if removed is None:
            raise NotFound(f"{ref} is not in the archive")
        self._remove_deleted_blobs(removed.blob_keys)
        self.reserve.ensure()  # made again once the delete has freed the room
        return removed

    def finish_deletions(self) -> int:
        """Remove the blobs that deletes interrupted by a crash left; return how many
        recorded blobs were settled (removed now, or found gone already)."""
        finished, after = 0, ""
        while keys := tx.read(self.engine, partial(deletes.recorded_deletions, after=after)):
            finished += self._remove_deleted_blobs(keys)
            after = keys[-1]
        return finished

    def is_deleted_blob(self, key: BlobKey) -> bool:
        """Whether ``key`` is the blob of a deleted instance: never to be re-indexed."""
        return tx.read(self.engine, lambda conn: deletes.is_recorded(conn, key))

    def _remove_deleted_blobs(self, keys: list[str]) -> int:
        gone: list[str] = []
        for key in keys:
            try:
                self.store.delete(BlobKey(key))
            except StoreError as exc:  # still recorded: the next check removes it
                log.error("could not remove the blob %s of a deleted instance: %s", key, exc)
                continue
            gone.append(key)
        if gone:
            try:
                self._writer.submit(lambda conn: deletes.forget_deletions(conn, gone))
            except (IndexUnavailable, IndexConflict) as exc:  # forgotten by the next check
                log.warning("deleted blobs stay recorded until the next check: %s", exc)
        return len(gone)


_CHUNK = 1 << 20


def _chunks(data: bytes | memoryview | BinaryIO) -> Iterator[bytes | memoryview]:
    if isinstance(data, bytes | memoryview | bytearray):
        yield data
        return
    data.seek(0)
    while chunk := data.read(_CHUNK):
        yield chunk
