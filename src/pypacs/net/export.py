"""The ``Exporter`` of ``remote``, over DIMSE: a study goes to a peer over one association
pypacs opens to it, one C-STORE per stored instance (PS3.4 B.2): the stored bytes when the
peer accepted their transfer syntax, transcoded only when it did not.

No C-MOVE through pypacs' own port: the sending is pypacs' own, so no access rule of the
DICOM port applies to it and the C-STOREs name no Move Originator (PS3.7 9.3.1.1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from pypacs.archive import Archive, Retrieval
from pypacs.model.status import Status
from pypacs.net import dimse, scu
from pypacs.net.options import NetOptions
from pypacs.net.sending import Counts, StoreSender, open_sending, send_all
from pypacs.query.entity import EntityRef
from pypacs.remote.export import EchoResult, IsCancelled, OnProgress, Progress
from pypacs.remote.registry import Peer, RemoteError

log = logging.getLogger("pypacs.net.export")


class DimseExporter:
    """Sends stored instances to peers by C-STORE; echoes them by C-ECHO. Thread-safe."""

    def __init__(self, archive: Archive, options: NetOptions) -> None:
        self.archive = archive
        self.options = options

    def echo(self, peer: Peer) -> EchoResult:
        """C-ECHO the peer (PS3.7 9.1.5); a peer that cannot be reached is ``ok=False``."""
        start = time.perf_counter()
        try:
            scu.echo(
                peer, self.options.ae_title, timeout=self.options.acse_timeout, tls=self.options.tls
            )
        except RemoteError as exc:
            return EchoResult(ok=False, status=None, milliseconds=None, error=str(exc))
        elapsed = (time.perf_counter() - start) * 1000
        return EchoResult(ok=True, status=Status.SUCCESS, milliseconds=round(elapsed, 3))

    def send_study(
        self,
        peer: Peer,
        study_uid: str,
        on_progress: OnProgress,
        cancelled: IsCancelled,
        skip: Collection[str] = (),
    ) -> Progress:
        """Send the stored instances of a study to ``peer``, as ``send`` does, but those
        whose SOP Instance UIDs are in ``skip``.

        Raises:
            IndexUnavailable: the index cannot be read.
        """
        with self.archive.retrieve(EntityRef(study_uid).query()) as retrieval:
            if skip:
                left = set(skip)
                retrieval = Retrieval(
                    max(0, retrieval.count - len(left)),
                    retrieval.syntaxes,
                    (s for s in retrieval.instances if s.sop_instance_uid not in left),
                )
            return self.send(peer, retrieval, on_progress, cancelled)

    def send(
        self, peer: Peer, instances: Retrieval, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        """Send these instances over one association to ``peer``: the counts after each
        go to ``on_progress``; the final counts, with the status a C-MOVE would end with
        (PS3.4 C.4.2.3.1), are returned."""
        counts = _Noted(instances.count)
        if not instances.count:
            return _final(Status.SUCCESS, counts)
        try:
            requestor = open_sending(self.options, peer, instances.syntaxes)
        except RemoteError as exc:
            log.warning("sending to %s: %s", peer.name, exc)
            return Progress(
                Status.UNABLE_TO_PERFORM_SUB_OPERATIONS, None, 0, 0, 0, error_comment=str(exc)
            )
        # PS3.7 9.1.1.1 (Priority): LOW, work nobody waits on interactively.
        sender = StoreSender(
            requestor.assoc, timeout=self.options.dimse_timeout, priority=dimse.PRIORITY_LOW
        )
        try:
            finished = send_all(
                self.archive,
                sender,
                instances.instances,
                counts,
                what=f"C-STORE to {peer}",
                cancelled=cancelled,
                on_progress=lambda: on_progress(_progress(Status.PENDING, counts, counts.sent)),
            )
        finally:
            requestor.end(completed=True)
        if not finished:
            # C.4.2.3.1: Cancel with the counts so far; Remaining is what never started.
            return _progress(Status.CANCEL, counts)
        return _final(counts.final_status(), counts)


class _Noted(Counts):
    """Counts that also note the last instance a C-STORE response came for."""

    sent: tuple[str, int] | None = None

    def add(self, status: int | None, uid: str) -> None:
        super().add(status, uid)
        self.sent = None if status is None else (uid, status)


def _progress(status: Status, counts: Counts, sent: tuple[str, int] | None = None) -> Progress:
    return Progress(
        status,
        counts.remaining,
        counts.completed,
        counts.failed,
        counts.warning,
        tuple(counts.failed_uids) if status is not Status.PENDING else (),
        sent=sent,
    )


def _final(status: Status, counts: Counts) -> Progress:
    # PS3.7 9.3.4.2: no Remaining count in a final response.
    return Progress(
        status, None, counts.completed, counts.failed, counts.warning, tuple(counts.failed_uids)
    )
