"""run(settings): the archive, the DICOM server and the HTTP server in one process."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable, Sequence

import uvicorn
from pydicom.dataset import Dataset

from pypacs.archive import Archive
from pypacs.archive.check import check
from pypacs.archive.ingest import configure_pydicom
from pypacs.config import Settings
from pypacs.model.levels import InformationModel
from pypacs.net import scu
from pypacs.net.ae import configure_pynetdicom, start_server
from pypacs.net.handlers import DimseHandlers
from pypacs.net.options import NetOptions, RemoteAE
from pypacs.web.app import create_app
from pypacs.web.jobs import EchoResult, MoveProgress, Remote, RemoteFailure

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
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted from such a
    # socket; without it a response written in two parts waits for the client's delayed
    # ACK (40 ms on loopback) on every keep-alive request after the first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class DimseRemoteOps:
    """The admin API's C-ECHO and C-MOVE, through the DIMSE client.

    A study is sent by a C-MOVE to our own DICOM port with the remote's AE title as move
    destination: the C-MOVE SCP then does the sending, as for any other requestor.
    """

    def __init__(self, net: NetOptions, dicom_port: int) -> None:
        self.net = net
        # A server listening on every address is asked over the loopback one.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(net.host, net.host)
        self.own = RemoteAE(name="(this server)", ae_title=net.ae_title, host=host, port=dicom_port)

    def remotes(self) -> Sequence[Remote]:
        return [Remote(r.name, r.ae_title, r.host, r.port) for r in self.net.remotes]

    def _remote(self, name: str) -> RemoteAE:
        for remote in self.net.remotes:
            if remote.name == name:
                return remote
        raise RemoteFailure(f"unknown remote {name!r}")

    def echo(self, name: str) -> EchoResult:
        remote = self._remote(name)
        start = time.perf_counter()
        try:
            scu.echo(remote, self.net.ae_title, timeout=self.net.acse_timeout)
        except scu.RemoteError as exc:
            return EchoResult(ok=False, status=None, milliseconds=None, error=str(exc))
        elapsed = (time.perf_counter() - start) * 1000
        return EchoResult(ok=True, status=0x0000, milliseconds=round(elapsed, 3))

    def move_study(
        self, study_uid: str, name: str, on_progress: Callable[[MoveProgress], None]
    ) -> MoveProgress:
        remote = self._remote(name)
        # The C-MOVE SCP finds a destination by AE title, the first remote that has it.
        first = next(r for r in self.net.remotes if r.ae_title == remote.ae_title)
        if first is not remote:
            raise RemoteFailure(
                f"remotes {first.name!r} and {remote.name!r} share the AE title "
                f"{remote.ae_title!r}; a C-MOVE to it goes to {first.name!r}"
            )
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        last: MoveProgress | None = None
        try:
            for response in scu.move(
                self.own,
                self.net.ae_title,
                InformationModel.STUDY_ROOT,
                identifier,
                remote.ae_title,
                timeout=self.net.dimse_timeout,
            ):
                last = MoveProgress(
                    status=response.status,
                    category=response.category,
                    remaining=response.remaining,
                    completed=response.completed,
                    failed=response.failed,
                    warning=response.warning,
                    error_comment=response.error_comment,
                    failed_uids=response.failed_uids,
                )
                on_progress(last)
        except scu.RemoteError as exc:
            raise RemoteFailure(str(exc)) from exc
        if last is None:
            raise RemoteFailure(f"{self.net.ae_title} gave no C-MOVE response")
        return last


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
            create_app(archive, web, on_ready=ready, remote_ops=DimseRemoteOps(net, dicom_port)),
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
