"""The client side: verify, query and retrieve from other archives."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from pypacs.errors import InvalidInstance, InvalidKind, PypacsError
from pypacs.model.levels import InformationModel
from pypacs.model.outcomes import status_for
from pypacs.model.sop import (
    QR_FIND,
    QR_GET,
    QR_MOVE,
    QR_TRANSFER_SYNTAXES,
    STORAGE_TRANSFER_SYNTAXES,
)
from pypacs.model.status import Status
from pypacs.net.part10 import received_part10
from pypacs.net.reactor import nodelay
from pypacs.remote.export import Progress
from pypacs.remote.registry import Peer, RemoteError

log = logging.getLogger("pypacs.scu")

_FIND_UID = {model: uid for uid, model in QR_FIND.items()}
_MOVE_UID = {model: uid for uid, model in QR_MOVE.items()}
_GET_UID = {model: uid for uid, model in QR_GET.items()}
_VERIFICATION = "1.2.840.10008.1.1"  # PS3.4 A.4
# The acceptor picks one syntax per context by its own preference and must then send every
# instance of that class in it. Offered a compressed one, it may pick it and have to
# compress what it holds uncompressed: slow, lossy or impossible. So we offer only the
# uncompressed syntaxes: a provider converts between those, and decompresses what it holds
# compressed.
_GET_TRANSFER_SYNTAXES = [
    ts for ts in STORAGE_TRANSFER_SYNTAXES if not UID(ts).is_compressed and not UID(ts).is_deflated
]
_MAX_PDU = 1_048_576  # what we receive per PDU during C-GET (instances come this way)

InstanceHandler = Callable[[bytes, str, str], int]
"""Called with (Part 10 bytes, SOP Class UID, SOP Instance UID) of each instance a C-GET
brings; returns the C-STORE status to answer (PS3.4 B.2.3). A ``PypacsError`` it raises
is answered with the status ``status_for`` gives."""


@dataclass(frozen=True)
class FindResult:
    status: int
    identifier: Dataset | None
    error_comment: str | None = None


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _associate(
    ae: AE,
    remote: Peer,
    sop_class: str,
    what: str,
    *,
    ext_neg: list[Any] | None = None,
    handlers: list[evt.EventHandlerType] | None = None,
    max_pdu: int = 16382,
) -> Association:
    """An established association on which ``sop_class`` was accepted.

    Raises:
        RemoteError: refused, rejected, unreachable, or ``sop_class`` not accepted.
    """
    assoc = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        max_pdu=max_pdu,
        ext_neg=ext_neg or [],
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), *(handlers or [])],
    )
    where = f"{remote.ae_title} at {remote.host}:{remote.port}"
    if assoc.is_rejected:
        raise RemoteError(
            f"{where} rejected the association (check its AE title and that it accepts ours)"
        )
    if not assoc.is_established:
        raise RemoteError(f"{where} refused or did not answer")
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        assoc.release()
        raise RemoteError(f"{where} does not offer {what}")
    return assoc


def _end(assoc: Association, completed: bool) -> None:
    """Release after the last response; abort when the caller stopped early or failed."""
    if not assoc.is_established:
        return
    if completed:
        assoc.release()
    else:
        assoc.abort()


def echo(remote: Peer, calling_ae: str, *, timeout: float = 30.0) -> None:
    """C-ECHO (PS3.7 9.1.5) against ``remote``.

    Raises:
        RemoteError: no association, or the remote answered other than success.
    """
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(_VERIFICATION, QR_TRANSFER_SYNTAXES)
    assoc = _associate(ae, remote, _VERIFICATION, "Verification")
    try:
        status = assoc.send_c_echo()
    finally:
        _end(assoc, completed=True)
    if "Status" not in status:
        raise RemoteError(f"{remote.ae_title} did not answer the C-ECHO (association lost)")
    if int(status.Status) != Status.SUCCESS:
        raise RemoteError(f"{remote.ae_title} answered the C-ECHO with 0x{status.Status:04X}")


def find(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    *,
    relational: bool = False,
    timeout: float = 30.0,
) -> Iterator[FindResult]:
    """C-FIND against ``remote``: every response, pending ones first, the final one last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _FIND_UID[model]
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(sop_class, QR_TRANSFER_SYNTAXES)
    ext_neg: list[Any] = []
    if relational:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = sop_class
        item.service_class_application_information = b"\x01"
        ext_neg.append(item)
    assoc = _associate(ae, remote, sop_class, f"C-FIND ({model})", ext_neg=ext_neg)
    completed = False
    try:
        for status, response in assoc.send_c_find(identifier, sop_class):
            if status is None or "Status" not in status:
                raise RemoteError(f"{remote.ae_title} stopped answering (association lost)")
            code = int(status.Status)
            comment = str(status.ErrorComment) if "ErrorComment" in status else None
            yield FindResult(code, response, comment)
        completed = True
    finally:
        _end(assoc, completed)


def move(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    destination: str,
    *,
    timeout: float = 60.0,
) -> Iterator[Progress]:
    """C-MOVE (PS3.4 C.4.2) of what ``identifier`` selects from ``remote`` to the AE
    ``destination``: the progress of each response, the final one last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _MOVE_UID[model]
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(sop_class, QR_TRANSFER_SYNTAXES)
    assoc = _associate(ae, remote, sop_class, f"C-MOVE ({model})")
    completed = False
    try:
        yield from _progress(remote, assoc.send_c_move(identifier, destination, sop_class))
        completed = True
    finally:
        _end(assoc, completed)


def get(
    remote: Peer,
    calling_ae: str,
    model: InformationModel,
    identifier: Dataset,
    on_instance: InstanceHandler,
    *,
    timeout: float = 60.0,
) -> Iterator[Progress]:
    """C-GET (PS3.4 C.4.3) of what ``identifier`` selects from ``remote``: each instance
    goes to ``on_instance`` as it arrives; the progress of each response, the final last.

    Raises:
        RemoteError: the association could not be established or was aborted.
    """
    sop_class = _GET_UID[model]
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(sop_class, QR_TRANSFER_SYNTAXES)
    roles = []
    # PS3.4 C.4.3.1: the instances come as C-STORE sub-operations on this association, so
    # we offer storage classes in the SCP role (PS3.7 D.3.3.4). Context IDs are odd numbers
    # up to 255 (PS3.8 9.3.2.2): 128 contexts at most, so pynetdicom's 120 common classes.
    for context in StoragePresentationContexts:
        storage_class = cast(str, context.abstract_syntax)
        ae.add_requested_context(storage_class, _GET_TRANSFER_SYNTAXES)
        roles.append(build_role(storage_class, scp_role=True))
    assoc = _associate(
        ae,
        remote,
        sop_class,
        f"C-GET ({model})",
        ext_neg=roles,
        handlers=[(evt.EVT_C_STORE, _store_handler(on_instance))],
        max_pdu=_MAX_PDU,
    )
    completed = False
    try:
        yield from _progress(remote, assoc.send_c_get(identifier, sop_class))
        completed = True
    finally:
        _end(assoc, completed)


def _store_handler(on_instance: InstanceHandler) -> Callable[[evt.Event], int | Dataset]:
    def on_store(event: evt.Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        try:
            return on_instance(_part10(event), sop_class, sop_instance)
        except PypacsError as exc:
            log.error("C-STORE of %s during C-GET refused: %s", sop_instance, exc)
            answer = Dataset()
            answer.Status = int(status_for(exc))
            answer.ErrorComment = str(exc)[:64]  # LO (PS3.5 6.2)
            return answer

    return on_store


def _part10(event: evt.Event) -> bytes:
    """The data set's bytes as received, behind a file meta header: no re-encoding.

    Raises:
        InvalidInstance: the request's UIDs are not ASCII.
    """
    try:
        return received_part10(cast(C_STORE, event.request), str(event.context.transfer_syntax))
    except UnicodeError as exc:
        raise InvalidInstance(
            "SOP Class or Instance UID is not ASCII", InvalidKind.UNPARSABLE
        ) from exc


def _progress(
    remote: Peer, responses: Iterator[tuple[Dataset, Dataset | None]]
) -> Iterator[Progress]:
    """Each C-MOVE/C-GET response as progress; counts a final response leaves out (they are
    conditional, PS3.7 9.3.4.2) are carried over from the last pending one."""
    last = Progress(Status.PENDING, None, 0, 0, 0)
    for status, identifier in responses:
        if "Status" not in status:
            raise RemoteError(f"{remote.ae_title} stopped answering (association lost)")
        completed = _count(status, "NumberOfCompletedSuboperations")
        failed = _count(status, "NumberOfFailedSuboperations")
        warning = _count(status, "NumberOfWarningSuboperations")
        last = Progress(
            status=int(status.Status),
            remaining=_count(status, "NumberOfRemainingSuboperations"),
            completed=last.completed if completed is None else completed,
            failed=last.failed if failed is None else failed,
            warning=last.warning if warning is None else warning,
            failed_uids=_failed_uids(identifier),
            error_comment=str(status.ErrorComment) if "ErrorComment" in status else None,
        )
        yield last


def _count(status: Dataset, keyword: str) -> int | None:
    value = status.get(keyword)
    return None if value is None or value == "" else int(value)


def _failed_uids(identifier: Dataset | None) -> tuple[str, ...]:
    # PS3.4 C.4.2.3.1: the final response's identifier lists the failed instances.
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return ()
    value = identifier.FailedSOPInstanceUIDList
    if value is None or value == "":
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
