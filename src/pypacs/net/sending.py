"""Sending stored instances by C-STORE over an association pypacs holds (PS3.4 B.2,
PS3.7 9.1.1): the contexts to propose for them, one C-STORE at a time with its response
awaited, the stored bytes when the peer accepted their syntax (transcoded only when it did
not), and the sub-operation counts of PS3.4 C.4.2.1.6 / C.4.3.1.5.

The one sending path: the exporter (an association pypacs opens to a peer) and C-MOVE/C-GET
sub-operations (the move destination's association, or the C-GET's own) both use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pypacs.archive import Archive, Form, StoredInstance
from pypacs.errors import PypacsError
from pypacs.model.status import Category, Status, category
from pypacs.net import dimse, pdu
from pypacs.net.association import Aborted, Association, AssociationError, Message, Timeouts
from pypacs.net.options import NetOptions
from pypacs.net.requestor import Proposal, Requestor, status_of
from pypacs.net.transport import Buffer
from pypacs.remote.registry import Peer

log = logging.getLogger("pypacs.net")

_UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def store_contexts(syntaxes: Sequence[tuple[str, str]]) -> list[Proposal]:
    """What to propose for instances stored as these (SOP class, transfer syntax) pairs:
    each pair as a context of its own, so that the peer can take each as stored, and per
    SOP class one uncompressed context to fall back to."""
    classes = sorted({sop_class for sop_class, _ in syntaxes})
    fallbacks: list[Proposal] = [(c, _UNCOMPRESSED) for c in classes]
    exact: list[Proposal] = [(c, (ts,)) for c, ts in sorted(set(syntaxes))]
    # PS3.8 9.3.2.2: 128 contexts at most. Past them the exact ones are left out first:
    # through the fallbacks every SOP class still reaches the peer, transcoded.
    return (fallbacks + exact)[: pdu.MAX_CONTEXTS]


def open_sending(options: NetOptions, peer: Peer, syntaxes: Sequence[tuple[str, str]]) -> Requestor:
    """An association to ``peer`` proposing ``store_contexts(syntaxes)``, for a
    ``StoreSender``; end it with ``Requestor.end(completed=True)``.

    Raises:
        RemoteError: the peer rejected the association, refused it or did not answer.
    """
    return Requestor.open(
        peer,
        options.ae_title,
        store_contexts(syntaxes),
        timeouts=Timeouts(
            artim=options.acse_timeout,
            pdu_read=options.pdu_read_timeout,
            dimse_idle=options.dimse_timeout,
        ),
        max_pdu=options.max_pdu_size,
        tls=options.tls,
    )


class StoreResult(NamedTuple):
    """A C-STORE-RSP's Status and Error Comment (PS3.7 9.1.1.1)."""

    status: int
    error_comment: str | None = None


class StoreSender:
    """Sends C-STOREs over ``assoc``, where we act as SCU, one at a time; one thread uses it.

    ``on_other`` gets any other message the peer sends while we wait for a response (the
    C-CANCEL of the C-GET these sub-operations serve, PS3.7 9.3.3.3); by default it is
    logged and dropped.
    """

    def __init__(
        self,
        assoc: Association,
        *,
        timeout: float,
        priority: int = dimse.PRIORITY_MEDIUM,
        on_other: Callable[[Message], None] | None = None,
    ) -> None:
        self.assoc = assoc
        self.timeout = timeout
        self.priority = priority
        self.on_other = on_other
        self._message_id = 0
        # SOP Class UID → accepted transfer syntax → context id; only contexts where we may
        # act as SCU (for C-GET, through SCP/SCU role selection, PS3.7 D.3.3.4).
        self.contexts: dict[str, dict[str, int]] = {}
        for cx in sorted(assoc.contexts.values(), key=lambda cx: cx.id):
            if cx.scu:
                by_syntax = self.contexts.setdefault(cx.abstract_syntax, {})
                by_syntax.setdefault(cx.transfer_syntax, cx.id)

    def accepted(self, sop_class: str) -> list[str]:
        """The transfer syntaxes the peer accepted for ``sop_class``, in proposal order."""
        return list(self.contexts.get(sop_class, ()))

    def send(
        self,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        data: Buffer,
        originator: tuple[str, int] | None = None,
    ) -> StoreResult:
        """One C-STORE of ``data`` (a data set in ``transfer_syntax``); its response.

        ``originator`` is the Move Originator's AE title and Message ID (PS3.7 9.3.1.1:
        set when the C-STORE is a C-MOVE's sub-operation).

        Raises:
            ValueError: no accepted context for ``sop_class`` in ``transfer_syntax``.
            Aborted: the association was lost, or no response came within ``timeout``
                (we aborted); it is closed.
        """
        context_id = self.contexts.get(sop_class, {}).get(transfer_syntax)
        if context_id is None:
            raise ValueError(f"no accepted context for {sop_class} in {transfer_syntax}")
        self._message_id = self._message_id % dimse.MAX_COUNT + 1
        message_id = self._message_id
        command = dimse.store_rq(
            message_id,
            sop_class,
            sop_instance,
            priority=self.priority,
            move_originator_ae=originator[0] if originator else None,
            move_originator_message_id=originator[1] if originator else None,
        )
        self.assoc.send_message(context_id, command, data)
        return self._response(message_id)

    def _response(self, message_id: int) -> StoreResult:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            message = self.assoc.receive(wait=max(left, 0.0)) if left > 0 else None
            if message is None:
                if self.assoc.is_established:
                    self.assoc.abort()
                    raise Aborted(f"no C-STORE response within {self.timeout:.0f} s")
                raise Aborted("the peer released the association")
            command = message.command
            if (
                command.command_field == dimse.C_STORE_RSP
                and command.message_id_being_responded_to == message_id
            ):
                return StoreResult(status_of(command), command.error_comment)
            if self.on_other is not None:
                self.on_other(message)
            else:
                log.warning(
                    "command 0x%04X while awaiting a C-STORE-RSP; ignored", command.command_field
                )


@dataclass
class Counts:
    """Sub-operation counts (PS3.4 C.4.2.1.6 and C.4.3.1.5)."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def add(self, status: int | None, uid: str) -> None:
        """Count one sub-operation by its C-STORE status (None: it never got one)."""
        self.remaining -= 1
        kind = Category.FAILURE if status is None else category(status)
        if kind is Category.SUCCESS:
            self.completed += 1
        elif kind is Category.WARNING:  # PS3.4 B.2.3: 0001, Bxxx
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(uid)

    def final_status(self) -> Status:
        """The final status (C.4.2.3.1): Success when all succeeded, Warning when one or
        more failed or had warnings, Failure when all failed."""
        if not self.failed and not self.warning:
            return Status.SUCCESS
        if not self.completed and not self.warning:
            return Status.UNABLE_TO_PERFORM_SUB_OPERATIONS
        return Status.SUB_OPERATIONS_WARNING


def send_stored(
    archive: Archive,
    sender: StoreSender,
    stored: StoredInstance,
    originator: tuple[str, int] | None = None,
) -> tuple[int | None, str]:
    """One C-STORE of a stored instance, as stored when the peer accepted its transfer
    syntax, else transcoded: the peer's status (None: none came) and why it failed."""
    accepted = sender.accepted(stored.sop_class_uid)
    if not accepted:
        return None, f"the peer accepted no presentation context for {stored.sop_class_uid}"
    try:
        out = archive.outgoing(stored, accepted, Form.DATASET)
        result = sender.send(
            stored.sop_class_uid,
            stored.sop_instance_uid,
            out.transfer_syntax_uid,
            out.data,
            originator,
        )
    except AssociationError as exc:
        return None, f"the association ended: {exc}"
    except PypacsError as exc:  # the blob cannot be read or transcoded
        return None, str(exc)
    comment = f" ({result.error_comment})" if result.error_comment else ""
    return result.status, f"the peer answered 0x{result.status:04X}{comment}"


def send_all(
    archive: Archive,
    sender: StoreSender,
    instances: Iterator[StoredInstance],
    counts: Counts,
    *,
    what: str,
    cancelled: Callable[[], bool],
    on_progress: Callable[[], None],
    originator: tuple[str, int] | None = None,
) -> bool:
    """Each instance by ``send_stored``, counted, ``on_progress`` after each; False as soon
    as ``cancelled()`` says so (the rest stay Remaining, PS3.4 C.4.2.3.1). Once the
    association is lost, whatever was not sent counts as failed. A failure is logged as
    "``what`` for <SOP Instance UID> failed"."""
    for stored in instances:
        if cancelled():
            return False
        status, why = send_stored(archive, sender, stored, originator)
        counts.add(status, stored.sop_instance_uid)
        if status is None or category(status) is Category.FAILURE:
            log.error("%s for %s failed: %s", what, stored.sop_instance_uid, why)
        if not sender.assoc.is_established:
            break
        on_progress()
    for stored in instances:
        counts.add(None, stored.sop_instance_uid)
    return True
