"""The client side: verify, query and retrieve from other archives (PS3.4 A, C as SCU)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pypacs.archive.part10 import file_meta
from pypacs.errors import InvalidInstance, InvalidKind, PypacsError
from pypacs.model.levels import InformationModel
from pypacs.model.outcomes import status_for
from pypacs.model.sop import (
    COMMON_STORAGE_SOP_CLASSES,
    QR_FIND,
    QR_GET,
    QR_MOVE,
    QR_TRANSFER_SYNTAXES,
    STORAGE_TRANSFER_SYNTAXES,
)
from pypacs.model.status import Status
from pypacs.net import dimse, pdata, pdu
from pypacs.net.association import Context, Message, Timeouts
from pypacs.net.identifier import IdentifierError, decode_identifier
from pypacs.net.options import TlsOptions
from pypacs.net.requestor import Proposal, Requestor, status_of
from pypacs.remote.export import Progress
from pypacs.remote.registry import Peer, RemoteError

log = logging.getLogger("pypacs.scu")

_FIND_UID = {model: uid for uid, model in QR_FIND.items()}
_MOVE_UID = {model: uid for uid, model in QR_MOVE.items()}
_GET_UID = {model: uid for uid, model in QR_GET.items()}
_VERIFICATION: Final = dimse.VERIFICATION_SOP_CLASS
# The acceptor picks one syntax per context by its own preference and must then send every
# instance of that class in it. Offered a compressed one, it may pick it and have to
# compress what it holds uncompressed: slow, lossy or impossible. So we offer only the
# uncompressed syntaxes: a provider converts between those, and decompresses what it holds
# compressed.
_GET_TRANSFER_SYNTAXES: Final = tuple(
    ts for ts in STORAGE_TRANSFER_SYNTAXES if not UID(ts).is_compressed and not UID(ts).is_deflated
)
# PS3.4 C.4.2.1.4 (Table C.4-2) / PS3.7 D.3.3.5: relational retrieval, byte 1 of the
# SOP Class Extended Negotiation of C-FIND.
_RELATIONAL: Final = b"\x01"
# A C-GET instance is handed over whole, as Part 10 bytes: our bound on one.
MAX_GET_INSTANCE: Final = 2 * 1024 * 1024 * 1024
_LO_LENGTH: Final = 64  # Error Comment is LO (PS3.5 6.2)

InstanceHandler = Callable[[bytes, str, str], int]
"""Called with (Part 10 bytes, SOP Class UID, SOP Instance UID) of each instance a C-GET
brings; returns the C-STORE status to answer (PS3.4 B.2.3). A ``PypacsError`` it raises
is answered with the status ``status_for`` gives."""


@dataclass(frozen=True)
class FindResult:
    status: int
    identifier: Dataset | None
    error_comment: str | None = None


def _open(
    remote: Peer,
    calling_ae: str,
    sop_class: str,
    what: str,
    timeout: float,
    *,
    more: Sequence[Proposal] = (),
    roles: Sequence[pdu.RoleSelection] = (),
    extended: Sequence[pdu.ExtendedNegotiation] = (),
    tls: TlsOptions | None = None,
) -> tuple[Requestor, Context]:
    """An association to ``remote`` proposing ``sop_class`` (first, in the uncompressed
    syntaxes) and ``more``; the context accepted for ``sop_class``.

    Raises:
        RemoteError: refused, rejected, unreachable, or ``sop_class`` not accepted.
    """
    requestor = Requestor.open(
        remote,
        calling_ae,
        [(sop_class, QR_TRANSFER_SYNTAXES), *more],
        timeouts=Timeouts(artim=timeout, pdu_read=timeout, dimse_idle=timeout),
        roles=roles,
        extended=extended,
        tls=tls,
    )
    return requestor, requestor.context(sop_class, what)


def echo(
    remote: Peer, calling_ae: str, *, timeout: float = 30.0, tls: TlsOptions | None = None
) -> None:
    """C-ECHO (PS3.7 9.1.5) against ``remote``.

    Raises:
        RemoteError: no association, or the remote answered other than success.
    """
    requestor, context = _open(remote, calling_ae, _VERIFICATION, "Verification", timeout, tls=tls)
    status: int = Status.CANNOT_UNDERSTAND
    for message in requestor.exchange(context, dimse.echo_rq):
        status = status_of(message.command)
    if status != Status.SUCCESS:
        raise RemoteError(f"{remote.ae_title} answered the C-ECHO with 0x{status:04X}")


def find(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    *,
    relational: bool = False,
    timeout: float = 30.0,
    tls: TlsOptions | None = None,
) -> Iterator[FindResult]:
    """C-FIND against ``remote``: every response, pending ones first, the final one last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _FIND_UID[model]
    extended = [pdu.ExtendedNegotiation(sop_class, _RELATIONAL)] if relational else []
    requestor, context = _open(
        remote, calling_ae, sop_class, f"C-FIND ({model})", timeout, extended=extended, tls=tls
    )
    for message in requestor.exchange(
        context, lambda message_id: dimse.find_rq(message_id, sop_class), identifier
    ):
        response = _identifier(message, context)
        yield FindResult(status_of(message.command), response, message.command.error_comment)


def move(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    destination: str,
    *,
    timeout: float = 60.0,
    tls: TlsOptions | None = None,
) -> Iterator[Progress]:
    """C-MOVE (PS3.4 C.4.2) of what ``identifier`` selects from ``remote`` to the AE
    ``destination``: the progress of each response, the final one last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _MOVE_UID[model]
    requestor, context = _open(remote, calling_ae, sop_class, f"C-MOVE ({model})", timeout, tls=tls)
    responses = requestor.exchange(
        context, lambda message_id: dimse.move_rq(message_id, sop_class, destination), identifier
    )
    yield from _progress(responses, context)


def get(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    on_instance: InstanceHandler,
    *,
    timeout: float = 60.0,
    tls: TlsOptions | None = None,
) -> Iterator[Progress]:
    """C-GET (PS3.4 C.4.3) of what ``identifier`` selects from ``remote``: each instance
    goes to ``on_instance`` as it arrives; the progress of each response, the final last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _GET_UID[model]
    # PS3.4 C.4.3.1: the instances come as C-STORE sub-operations on this association, so
    # we offer storage classes in the SCP role only (PS3.7 D.3.3.4).
    storage = COMMON_STORAGE_SOP_CLASSES
    requestor, context = _open(
        remote,
        calling_ae,
        sop_class,
        f"C-GET ({model})",
        timeout,
        more=[(c, _GET_TRANSFER_SYNTAXES) for c in storage],
        roles=[pdu.RoleSelection(c, scu=False, scp=True) for c in storage],
        tls=tls,
    )
    responses = requestor.exchange(
        context,
        lambda message_id: dimse.get_rq(message_id, sop_class),
        identifier,
        on_request=_StoreProvider(requestor, on_instance).on_request,
        sinks=_part10_sink(requestor),
    )
    yield from _progress(responses, context)


class _Part10Sink(pdata.BufferSink):
    """A C-STORE's data set received behind its file meta header, as one Part 10 file."""

    def __init__(self, meta: bytes, error: InvalidInstance | None) -> None:
        super().__init__(MAX_GET_INSTANCE + len(meta))
        self.data += meta
        self.error = error


def _part10_sink(requestor: Requestor) -> Callable[[dimse.Command, int], pdata.Sink]:
    contexts = requestor.assoc.contexts

    def sink(command: dimse.Command, context_id: int) -> pdata.Sink:
        if command.command_field != dimse.C_STORE_RQ:
            return pdata.BufferSink()
        syntax = contexts[context_id].transfer_syntax
        try:
            meta = file_meta(
                command.affected_sop_class_uid or "",
                command.affected_sop_instance_uid or "",
                syntax,
            )
        except UnicodeError:
            error = InvalidInstance(
                "SOP Class or Instance UID is not ASCII", InvalidKind.UNPARSABLE
            )
            return _Part10Sink(b"", error)
        return _Part10Sink(meta, None)

    return sink


class _StoreProvider:
    """Answers the C-STORE sub-operations of a C-GET (PS3.4 C.4.3.3) with the status of
    the caller's handler."""

    def __init__(self, requestor: Requestor, on_instance: InstanceHandler) -> None:
        self.requestor = requestor
        self.on_instance = on_instance

    def on_request(self, message: Message) -> None:
        command = message.command
        if command.command_field != dimse.C_STORE_RQ or command.message_id is None:
            log.warning("request 0x%04X during a C-GET; ignored", command.command_field)
            return
        sop_class = command.affected_sop_class_uid or ""
        sop_instance = command.affected_sop_instance_uid or ""
        comment = None
        try:
            status = self.on_instance(_part10(message), sop_class, sop_instance)
        except PypacsError as exc:
            log.error("C-STORE of %s during C-GET refused: %s", sop_instance, exc)
            status, comment = int(status_for(exc)), str(exc)[:_LO_LENGTH]
        answer = dimse.store_rsp(
            command.message_id, sop_class, sop_instance, status, error_comment=comment
        )
        self.requestor.send(message.context_id, answer)


def _part10(message: Message) -> bytes:
    """The data set's bytes as received, behind a file meta header: no re-encoding.

    Raises:
        InvalidInstance: the request's UIDs are not ASCII, or it came without a data set.
    """
    sink = message.sink
    if not isinstance(sink, _Part10Sink):
        raise InvalidInstance("C-STORE without a data set", InvalidKind.UNPARSABLE)
    if sink.error is not None:
        raise sink.error
    return bytes(sink.data)


def _identifier(message: Message, context: Context) -> Dataset | None:
    data = message.dataset
    if data is None and isinstance(message.sink, pdata.BufferSink):
        data = bytes(message.sink.data)  # a sink of ours (C-GET's) rather than the default
    if data is None:
        return None
    try:
        return decode_identifier(data, context.transfer_syntax)
    except IdentifierError as exc:
        raise RemoteError(f"a response identifier: {exc}") from exc


def _progress(responses: Iterator[Message], context: Context) -> Iterator[Progress]:
    """Each C-MOVE/C-GET response as progress; counts a final response leaves out (they are
    conditional, PS3.7 9.3.4.2) are carried over from the last pending one."""
    last = Progress(Status.PENDING, None, 0, 0, 0)
    for message in responses:
        command = message.command
        last = Progress(
            status=status_of(command),
            remaining=command.remaining,
            completed=last.completed if command.completed is None else command.completed,
            failed=last.failed if command.failed is None else command.failed,
            warning=last.warning if command.warning is None else command.warning,
            failed_uids=_failed_uids(_identifier(message, context)),
            error_comment=command.error_comment,
        )
        yield last


def _failed_uids(identifier: Dataset | None) -> tuple[str, ...]:
    # PS3.4 C.4.2.3.1: the final response's identifier lists the failed instances.
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return ()
    value = identifier.FailedSOPInstanceUIDList
    if value is None or value == "":
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
