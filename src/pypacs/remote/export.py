"""Sending instances to a peer: the ``Exporter`` protocol (``net`` implements it over one
association of C-STORE operations) and the types every sender shares: ``Progress`` for the
sub-operation counts, ``EchoResult`` for a C-ECHO, ``RemoteError`` for a peer that failed.

C-MOVE and C-GET responses (``net.scu``) and exports report in the same ``Progress``, with
the statuses of PS3.4 C.4.2.1.5, so that a job reads the same whichever way it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from pypacs.archive import Retrieval
from pypacs.model.status import Category, Status, category
from pypacs.remote.registry import Peer, RemoteError

__all__ = ["EchoResult", "Exporter", "NoExporter", "Progress", "RemoteError"]

# PS3.4 Tables C.4-2 (C-MOVE) and C.4-3 (C-GET): the statuses a retrieve may end with.
_DESCRIPTIONS: dict[int, str] = {
    Status.SUCCESS: "sub-operations complete, no failures",
    Status.UNABLE_TO_CALCULATE_MATCHES: "refused: out of resources, unable to calculate "
    "number of matches",
    Status.UNABLE_TO_PERFORM_SUB_OPERATIONS: "refused: out of resources, unable to perform "
    "sub-operations",
    Status.MOVE_DESTINATION_UNKNOWN: "refused: move destination unknown",
    Status.DATASET_DOES_NOT_MATCH_SOP_CLASS: "identifier does not match SOP class",
    Status.SUB_OPERATIONS_WARNING: "sub-operations complete, one or more failures or warnings",
    Status.CANCEL: "sub-operations terminated due to cancel",
    Status.PENDING: "sub-operations are continuing",
}
# PS3.4 C.4.2.1.5, C.4.3.1.4: "Failed: Unable to process" is any Cxxx status.
_UNABLE_TO_PROCESS = range(0xC000, 0xD000)


@dataclass(frozen=True)
class Progress:
    """Sub-operation counts after one step of sending (PS3.7 9.3.4.2, 9.3.3.2): a C-MOVE or
    C-GET response, or an export's instance; ``remaining`` is None in a final report."""

    status: int
    remaining: int | None
    completed: int
    failed: int
    warning: int
    failed_uids: tuple[str, ...] = ()
    error_comment: str | None = None
    # An export's step: the instance whose C-STORE response just came, and its status.
    sent: tuple[str, int] | None = None

    @property
    def category(self) -> Category:
        """pending, success, warning, cancel or failure (PS3.7 Annex C)."""
        return category(self.status)

    @property
    def done(self) -> int:
        """Sub-operations finished so far, whatever their outcome."""
        return self.completed + self.failed + self.warning

    @property
    def description(self) -> str:
        """What the standard calls the status, when it is one a retrieve may end with."""
        if self.status in _UNABLE_TO_PROCESS:
            return "unable to process"
        return _DESCRIPTIONS.get(self.status, "")


@dataclass(frozen=True)
class EchoResult:
    """The outcome of one C-ECHO: ``status`` is the DIMSE status when one came back."""

    ok: bool
    status: int | None
    milliseconds: float | None
    error: str | None = None


OnProgress = Callable[[Progress], None]
IsCancelled = Callable[[], bool]


class Exporter(Protocol):
    """Sends stored instances to a peer, reporting progress after each one."""

    def echo(self, peer: Peer) -> EchoResult:
        """C-ECHO the peer (PS3.7 9.1.5); a peer that cannot be reached is ``ok=False``."""
        ...

    def send(
        self, peer: Peer, instances: Retrieval, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        """Send these instances to ``peer``; ``on_progress`` gets the counts after each, the
        final counts are returned (status per PS3.4 C.4.2.3.1; CANCEL when ``cancelled()``
        turned true between two instances; UNABLE_TO_PERFORM_SUB_OPERATIONS with the reason
        as error comment when no association could be made)."""
        ...

    def send_study(
        self,
        peer: Peer,
        study_uid: str,
        on_progress: OnProgress,
        cancelled: IsCancelled,
        skip: Collection[str] = (),
    ) -> Progress:
        """Send the stored instances of a study to ``peer``, as ``send`` does, but those
        whose SOP Instance UIDs are in ``skip`` (sent before: a job taken over)."""
        ...


class NoExporter:
    """The ``Exporter`` of a process without a DICOM side: every peer is out of reach."""

    def echo(self, peer: Peer) -> EchoResult:
        return EchoResult(ok=False, status=None, milliseconds=None, error=_NO_DIMSE)

    def send(
        self, peer: Peer, instances: Retrieval, on_progress: OnProgress, cancelled: IsCancelled
    ) -> Progress:
        raise RemoteError(_NO_DIMSE)

    def send_study(
        self,
        peer: Peer,
        study_uid: str,
        on_progress: OnProgress,
        cancelled: IsCancelled,
        skip: Collection[str] = (),
    ) -> Progress:
        raise RemoteError(_NO_DIMSE)


_NO_DIMSE = "this process has no DICOM side to reach remotes with"
