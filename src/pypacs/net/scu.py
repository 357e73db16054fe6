"""The client side: query (and later retrieve from) other archives."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from pypacs.errors import PypacsError
from pypacs.model.levels import InformationModel
from pypacs.model.sop import QR_FIND, QR_TRANSFER_SYNTAXES
from pypacs.net.options import RemoteAE

_FIND_UID = {model: uid for uid, model in QR_FIND.items()}


class RemoteError(PypacsError):
    """A remote AE could not be reached or refused the association."""


@dataclass(frozen=True)
class FindResult:
    status: int
    identifier: Dataset | None
    error_comment: str | None = None


def parse_remote(text: str, remotes: tuple[RemoteAE, ...]) -> RemoteAE:
    """A ``[remotes]`` name, or ``host:port:AE``.

    Raises:
        RemoteError: neither a known name nor host:port:AE.
    """
    for remote in remotes:
        if remote.name == text:
            return remote
    host, sep, rest = text.rpartition(":")
    host, sep2, port = host.rpartition(":") if sep else ("", "", "")
    if sep and sep2 and port.isdigit() and 0 < int(port) < 65536 and rest and host:
        return RemoteAE(name=text, ae_title=rest, host=host, port=int(port))
    names = ", ".join(r.name for r in remotes) or "none configured"
    raise RemoteError(
        f"unknown remote {text!r}: expected a [remotes] name ({names}) or host:port:AE"
    )


def _nodelay(event: evt.Event) -> None:
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def find(
    remote: RemoteAE,
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
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(sop_class, QR_TRANSFER_SYNTAXES)
    ext_neg: list[Any] = []
    if relational:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = sop_class
        item.service_class_application_information = b"\x01"
        ext_neg.append(item)
    assoc = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        ext_neg=ext_neg,
        evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
    )
    if not assoc.is_established:
        raise RemoteError(
            f"{remote.ae_title} at {remote.host}:{remote.port} refused or did not answer"
        )
    try:
        for status, response in assoc.send_c_find(identifier, sop_class):
            if status is None or "Status" not in status:
                raise RemoteError(f"{remote.ae_title} stopped answering (association lost)")
            code = int(status.Status)
            comment = str(status.ErrorComment) if "ErrorComment" in status else None
            yield FindResult(code, response, comment)
    finally:
        if assoc.is_established:
            assoc.release()
