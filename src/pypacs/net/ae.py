"""Build pypacs' application entity and start its association server."""

from __future__ import annotations

import logging
import socket
import threading

from pynetdicom import AE, AllStoragePresentationContexts, _config
from pynetdicom.presentation import VerificationPresentationContexts
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from pypacs.model.sop import (
    QR_FIND,
    QR_GET,
    QR_MOVE,
    QR_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
)
from pypacs.net.handlers import DimseHandlers
from pypacs.net.options import NetOptions
from pypacs.net.reactor import Negotiation, PromptRequestHandler, SharedContexts

_SHARED_ACCEPT_TIMEOUT = 1.0  # seconds an accept on a shared socket waits for a connection


def configure_pynetdicom() -> None:
    """Set pynetdicom's library globals, once, from the server."""
    # Identifiers are logged by us, one line per association, not per message by the library.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    # Accept only the storage SOP classes we know (rejected contexts for the rest).
    _config.UNRESTRICTED_STORAGE_SERVICE = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def storage_classes() -> frozenset[str]:
    """Every storage SOP class pydicom's dictionary or pynetdicom knows, retired included."""
    return STORAGE_SOP_CLASSES | {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}


def build_ae(options: NetOptions) -> AE:
    """The acceptor: Verification, every storage SOP class (as SCP, and as
    SCU for C-GET through role selection), and the Query/Retrieve SOP classes."""
    ae = AE(ae_title=options.ae_title)
    ae.maximum_associations = options.max_associations
    ae.maximum_pdu_size = options.max_pdu_size
    ae.acse_timeout = options.acse_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.network_timeout = options.network_timeout
    for context in VerificationPresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), STORAGE_TRANSFER_SYNTAXES)
    for sop_class in sorted(storage_classes()):
        # PS3.4 C.4.3.1 / PS3.7 D.3.3.4: a C-GET SCU proposes the storage classes it takes
        # with itself as SCP; we accept the role and send over that association.
        ae.add_supported_context(sop_class, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for sop_class in (*QR_FIND, *QR_MOVE, *QR_GET):
        ae.add_supported_context(sop_class, QR_TRANSFER_SYNTAXES)
    return ae


def start_server(
    options: NetOptions, handlers: DimseHandlers, sock: socket.socket | None = None
) -> tuple[AE, ThreadedAssociationServer]:
    """Start listening; returns once the socket is bound (port 0 picks a free port).

    ``sock``: a listening socket shared with other worker processes, accepted on instead
    of ``options.port``. Stop such a server by aborting its associations and exiting: its
    ``shutdown`` would shut the shared socket down for every process.
    """
    ae = build_ae(options)
    # What ae.start_server(block=False) does, with our request handler (net/reactor.py).
    server = ae.make_server(
        (options.host, options.port if sock is None else 0),
        evt_handlers=handlers.bindings(),
        server_class=ThreadedAssociationServer,
        request_handler=PromptRequestHandler,
    )
    if sock is not None:
        # The association server bound a port of its own: it accepts on the shared one.
        # A timeout, because another process may take a connection both were woken for.
        if server.socket is not None:
            server.socket.close()
        sock.settimeout(_SHARED_ACCEPT_TIMEOUT)
        server.socket = sock
        server.server_address = sock.getsockname()
    server.contexts = SharedContexts(server.contexts)
    server.on_association_finished = handlers.on_finished  # type: ignore[attr-defined]
    server.on_retrieve = handlers.retrieve.serve  # type: ignore[attr-defined]
    server.negotiation = Negotiation(  # type: ignore[attr-defined]
        storage_classes(), options.accept_unknown_sop_classes
    )
    thread = threading.Thread(
        target=make_target(server.serve_forever), name="pypacs-dicom-server", daemon=True
    )
    thread.start()
    ae._servers.append(server)
    return ae, server
