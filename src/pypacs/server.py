"""run(settings): the archive, the DICOM server and the HTTP server in one process."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from pypacs.archive import Archive
from pypacs.archive.check import check
from pypacs.archive.ingest import configure_pydicom
from pypacs.config import Settings
from pypacs.net.ae import configure_pynetdicom, start_server
from pypacs.net.handlers import DimseHandlers
from pypacs.web.app import create_app

log = logging.getLogger("pypacs.server")


def configure_libraries() -> None:
    """Library globals, set once per process."""
    configure_pydicom()
    configure_pynetdicom()


def open_archive(settings: Settings) -> Archive:
    configure_libraries()
    return Archive.open(settings.archive_options())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; prints one 'listening' line on stdout once ready."""
    archive = open_archive(settings)
    try:
        if settings[("storage", "check_on_start")]:
            report = check(archive)
            log.info(
                "start-up check: %d blobs, %d re-indexed, %d missing, %d unreadable",
                report.blobs,
                len(report.reindexed),
                len(report.missing),
                len(report.unreadable),
            )
        net = settings.net_options()
        ae, dicom_server = start_server(net, DimseHandlers(archive, net))
        web = settings.web_options()
        http_socket = _listen(web.host, web.port)
        dicom_port = dicom_server.server_address[1]
        http_port = http_socket.getsockname()[1]

        def ready() -> None:
            log.info(
                "pypacs %s serving AE %s: DICOM on %s:%d, HTTP on %s:%d, index %s",
                settings.source,
                net.ae_title,
                net.host,
                dicom_port,
                web.host,
                http_port,
                settings.database_url,
            )
            print(
                f"listening dicom={net.host}:{dicom_port} http={web.host}:{http_port}", flush=True
            )

        config = uvicorn.Config(
            create_app(archive, web, on_ready=ready),
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        try:
            asyncio.run(uvicorn.Server(config).serve(sockets=[http_socket]))
        finally:
            ae.shutdown()
            log.info("pypacs stopped")
    finally:
        archive.close()
    sys.stdout.flush()
