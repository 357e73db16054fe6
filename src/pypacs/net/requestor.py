"""pypacs as association requestor (PS3.8 9.2 AE-1 to AE-4, PS3.7 9.3 as SCU): propose the
contexts, associate, exchange one request's messages, release or abort at the end.

The one place where a peer's rejection, silence or abort becomes ``RemoteError``, with the
messages the command line and the admin API show; identifiers (C-FIND, C-GET, C-MOVE) are
pydicom data sets, encoded by net/identifier.py.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from pydicom.dataset import Dataset

from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pypacs.model.status import Category, Status, category
from pypacs.net import dimse, pdu
from pypacs.net.association import (
    Aborted,
    Association,
    AssociationError,
    Context,
    Message,
    Rejected,
    SinkFactory,
    Timeouts,
    connect,
)
from pypacs.net.identifier import IdentifierError, encode_identifier
from pypacs.net.options import TlsOptions
from pypacs.net.tls import client_context
from pypacs.net.transport import Buffer
from pypacs.remote.registry import Peer, RemoteError

log = logging.getLogger("pypacs.scu")

# An abstract syntax and the transfer syntaxes proposed for it (PS3.8 9.3.2.2).
Proposal = tuple[str, Sequence[str]]
# What we receive per PDU: instances of a C-GET come this way (PS3.8 D.1).
DEFAULT_MAX_PDU: Final = 1024 * 1024
# Messages a peer sends us during a request that are neither its responses nor ones we
# serve (a C-STORE of a C-GET): how many we drop before calling the peer broken.
_MAX_STRAY: Final = 64


def associate_rq(
    remote: Peer,
    calling_ae: str,
    proposals: Sequence[Proposal],
    *,
    roles: Sequence[pdu.RoleSelection] = (),
    extended: Sequence[pdu.ExtendedNegotiation] = (),
    max_pdu: int = DEFAULT_MAX_PDU,
) -> pdu.AssociateRQ:
    """The A-ASSOCIATE-RQ proposing ``proposals`` on odd context ids (PS3.8 9.3.2.2).

    Raises:
        ValueError: more than 128 proposals.
    """
    if len(proposals) > pdu.MAX_CONTEXTS:
        raise ValueError(f"{len(proposals)} presentation contexts; at most {pdu.MAX_CONTEXTS}")
    contexts = tuple(
        pdu.PresentationContextRQ(2 * i + 1, abstract, tuple(syntaxes))
        for i, (abstract, syntaxes) in enumerate(proposals)
    )
    user = pdu.UserInformation(
        max_length=max_pdu,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        roles=tuple(roles),
        extended=tuple(extended),
    )
    return pdu.AssociateRQ(remote.ae_title, calling_ae, contexts, user)


class Requestor:
    """One association pypacs opened to ``remote``, used by one thread as SCU."""

    def __init__(self, assoc: Association, remote: Peer) -> None:
        self.assoc = assoc
        self.remote = remote
        self._message_id = 0

    @classmethod
    def open(
        cls,
        remote: Peer,
        calling_ae: str,
        proposals: Sequence[Proposal],
        *,
        timeouts: Timeouts,
        roles: Sequence[pdu.RoleSelection] = (),
        extended: Sequence[pdu.ExtendedNegotiation] = (),
        max_pdu: int = DEFAULT_MAX_PDU,
        tls: TlsOptions | None = None,
    ) -> Requestor:
        """An established association to ``remote`` proposing ``proposals``; over TLS with
        ``tls``'s files when the remote says ``tls = true``.

        Raises:
            RemoteError: the peer rejected the association, refused the connection, failed
                the TLS handshake or did not answer; or it wants TLS and ``tls`` is None.
        """
        rq = associate_rq(
            remote, calling_ae, proposals, roles=roles, extended=extended, max_pdu=max_pdu
        )
        context = None
        if remote.tls:
            if tls is None:
                raise RemoteError(f"{remote} is reached over TLS: [tls] names no certificate")
            context = client_context(tls)
        try:
            assoc = connect(remote.host, remote.port, rq, timeouts, context)
        except Rejected as exc:
            raise RemoteError(
                f"{remote} rejected the association (check its AE title and that it accepts ours)"
            ) from exc
        except AssociationError as exc:
            log.debug("association with %s: %s", remote, exc)
            if isinstance(exc.__cause__, ssl.SSLError):
                raise RemoteError(f"{remote}: TLS handshake failed: {exc.__cause__}") from exc
            raise RemoteError(f"{remote} refused or did not answer") from exc
        return cls(assoc, remote)

    def context(self, sop_class: str, what: str) -> Context:
        """The first accepted context of ``sop_class`` in which we are the SCU.

        Raises:
            RemoteError: there is none (the association is released first).
        """
        for cx in self.assoc.contexts.values():
            if cx.abstract_syntax == sop_class and cx.scu:
                return cx
        self.end(completed=True)
        raise RemoteError(f"{self.remote} does not offer {what}")

    def next_message_id(self) -> int:
        """A Message ID for the next request (PS3.7 E.1-1: US, unique on the association)."""
        self._message_id = self._message_id % dimse.MAX_COUNT + 1
        return self._message_id

    def exchange(
        self,
        context: Context,
        build: Callable[[int], bytes],
        identifier: Dataset | None = None,
        *,
        on_request: Callable[[Message], None] | None = None,
        sinks: SinkFactory | None = None,
    ) -> Iterator[Message]:
        """One operation, and then the association's end: the request ``build(message_id)``
        with ``identifier`` as its data set, then its responses as ``responses`` gives them.
        Released after the final response; aborted if the caller stops early or fails.

        Raises:
            RemoteError: as ``responses``; or the identifier cannot be encoded.
        """
        completed = False
        try:
            message_id = self.next_message_id()
            data = None
            if identifier is not None:
                try:
                    data = encode_identifier(identifier, context.transfer_syntax)
                except IdentifierError as exc:
                    raise RemoteError(f"the identifier cannot be sent: {exc}") from exc
            self.send(context.id, build(message_id), data)
            yield from self.responses(message_id, on_request=on_request, sinks=sinks)
            completed = True
        finally:
            self.end(completed)

    def send(self, context_id: int, command: bytes, dataset: Buffer | None = None) -> None:
        """Send one message (a request, or our answer to the peer's).

        Raises:
            RemoteError: the association was lost.
        """
        try:
            self.assoc.send_message(context_id, command, dataset)
        except AssociationError as exc:
            raise self._lost(exc) from exc

    def responses(
        self,
        message_id: int,
        *,
        on_request: Callable[[Message], None] | None = None,
        sinks: SinkFactory | None = None,
    ) -> Iterator[Message]:
        """The responses to ``message_id`` as they come, pending ones first, up to and
        including the final one (PS3.7 9.3: any status but Pending ends the operation).

        Requests the peer makes meanwhile (C-STORE sub-operations of a C-GET, PS3.4
        C.4.3) go to ``on_request``; their data sets to the sinks ``sinks`` picks.

        Raises:
            RemoteError: the association was lost, released or went silent past the DIMSE
                timeout (we aborted), or the peer sent something else too often.
        """
        strays = 0
        while True:
            try:
                message = self.assoc.receive(sinks=sinks)
            except AssociationError as exc:
                raise self._lost(exc) from exc
            if message is None:
                raise RemoteError(f"{self.remote.ae_title} stopped answering (association lost)")
            command = message.command
            if command.is_response and command.message_id_being_responded_to == message_id:
                yield message
                if category(status_of(command)) is not Category.PENDING:
                    return
            elif not command.is_response and on_request is not None:
                on_request(message)
            else:
                strays += 1
                log.warning(
                    "%s sent command 0x%04X during request %d; ignored",
                    self.remote.ae_title,
                    command.command_field,
                    message_id,
                )
                if strays > _MAX_STRAY:
                    self.assoc.abort()
                    raise RemoteError(
                        f"{self.remote.ae_title} sent {strays} messages that answer nothing"
                    )

    def end(self, completed: bool) -> None:
        """Release after the last response; abort when the caller stopped early or failed.
        Never raises: the outcome is already known."""
        if not self.assoc.is_established:
            self.assoc.close()
            return
        if not completed:
            self.assoc.abort()
            return
        try:
            self.assoc.release()
        except AssociationError as exc:
            log.debug("release of the association with %s: %s", self.remote, exc)

    def _lost(self, exc: AssociationError) -> RemoteError:
        reason = f": {exc}" if isinstance(exc, Aborted) else ""
        return RemoteError(f"{self.remote.ae_title} stopped answering (association lost{reason})")


def status_of(command: dimse.Command) -> int:
    """A response's Status (PS3.7 C), Cannot Understand if it had none."""
    return Status.CANNOT_UNDERSTAND if command.status is None else command.status
