"""run(settings): the archive, the DICOM server and the HTTP server in one process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import re
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pypacs.archive import Archive
from pypacs.archive.check import check
from pypacs.archive.ingest import configure_pydicom
from pypacs.audit import Auditor, open_auditor
from pypacs.config import Settings
from pypacs.errors import ConfigError, PypacsError, StoreError
from pypacs.index import tx
from pypacs.index.engine import close_engine, make_engine
from pypacs.index.migrations import current_version
from pypacs.net.acceptor import Acceptor
from pypacs.net.export import DimseExporter
from pypacs.net.options import NetOptions
from pypacs.net.services import DicomService
from pypacs.net.tls import https_context, server_context
from pypacs.remote.jobs import Jobs
from pypacs.supervisor import Supervisor, share, worker_count
from pypacs.web.app import create_app
from pypacs.web.http.connection import limited_protocol
from pypacs.web.http.oidc import OidcVerifier, read_jwks_file
from pypacs.web.options import WebOptions

log = logging.getLogger("pypacs.server")


def configure_libraries() -> None:
    """Library globals, set once per process."""
    configure_pydicom()


class ListenError(PypacsError):
    """A port cannot be listened on: in use, not permitted, or no such address."""

    exit_status = 2  # the command line's status for what the user must change first


# Only for text that is not a URL at all: the password between "user:" and "@".
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
# What make_url raises for text it cannot read (ValueError: a port that is not a number).
_NOT_A_URL = (ArgumentError, ValueError)


def shown_url(url: str) -> str:
    """The database URL as logs and messages show it: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except _NOT_A_URL:
        return _PASSWORD.sub(r"\1***@", url)


def url_redactions(url: str) -> dict[str, str]:
    """Each way the URL with its password may be written, mapped to its masked form."""
    masked = shown_url(url)
    forms = {url}
    with contextlib.suppress(*_NOT_A_URL):
        forms.add(make_url(url).render_as_string(hide_password=False))
    return {form: masked for form in forms if form != masked}


@dataclasses.dataclass(frozen=True)
class ArchiveLocation:
    """Where the archive's files and index are, as absolute as the settings allow."""

    folder: Path
    database_url: str
    explicit: bool  # named by --data or a configuration file, not the built-in default

    def __str__(self) -> str:
        return f"{self.folder} (index {shown_url(self.database_url)})"

    def exists(self) -> bool:
        """The folder exists and so does an index in it (SQLite) or on the server.

        Raises:
            ConfigError: the database URL is not one pypacs can use.
            IndexUnavailable: the database server cannot be reached.
        """
        try:
            url = make_url(self.database_url)
        except _NOT_A_URL as exc:
            raise ConfigError(
                f'[database] url = "{shown_url(self.database_url)}": expected a database URL '
                "(sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE)"
            ) from exc
        if not self.folder.is_dir():
            return False
        if url.get_backend_name() == "sqlite":
            # Connecting would create the file: look for it instead.
            return url.database in (None, "", ":memory:") or Path(url.database).is_file()
        engine = make_engine(self.database_url)
        try:
            return tx.read(engine, current_version) > 0
        finally:
            close_engine(engine)


def archive_location(settings: Settings) -> ArchiveLocation:
    """The archive the settings name; a relative folder is taken from the current one."""
    folder = Path(settings.storage.path).absolute()
    url = settings.database.url or f"sqlite:///{folder / 'index.sqlite'}"
    with contextlib.suppress(*_NOT_A_URL):
        parsed = make_url(url)
        database = parsed.database
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            url = parsed.set(database=str(Path(database).absolute())).render_as_string(False)
    return ArchiveLocation(folder, url, ("storage", "path") in settings.explicit)


class NoArchive(PypacsError):
    """The settings name an archive that does not exist, and making one was not asked for."""

    exit_status = 2  # the command line's status for a usage error


def open_archive(
    settings: Settings,
    *,
    create: bool = True,
    announce: Callable[[str], None] | None = None,
    hint: str = "",
) -> Archive:
    """Open the archive the settings name and ``announce`` which: ``archive FOLDER (index
    URL)``, or ``new archive …`` when it is made now.

    Raises:
        NoArchive: it does not exist and ``create`` is false; ``hint`` ends the message.
    """
    location = archive_location(settings)
    new = not location.exists()
    if new and not create:
        raise NoArchive(
            f"no archive at {location}; name an existing one with --data DIR or --config FILE"
            + hint
        )
    if announce is not None:
        announce(f"{'new archive' if new else 'archive'} {location}")
    if new:
        # The folder holds the space reserve even when neither the index (PostgreSQL) nor
        # the blobs (S3) are in it, so nothing else would make it.
        try:
            location.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot make the archive folder {location.folder}: {exc}") from exc
    configure_libraries()
    return Archive.open(settings.archive_options())


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int, what: str, setting: str) -> socket.socket:
    """A listening socket on host:port.

    Raises:
        ListenError: names the port (``what``), host:port and the reason, in one line.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted from such a
    # socket; without it a response written in two parts waits for the client's delayed
    # ACK (40 ms on loopback) on every keep-alive request after the first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(_listen_failure(what, host, port, setting, exc)) from exc
    sock.set_inheritable(True)
    return sock


def _listen_failure(what: str, host: str, port: int, setting: str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"cannot listen for {what} on {_address(host, port)}: {reason} ({setting})"


def _start_dimse(
    net: NetOptions,
    archive: Archive,
    auditor: Auditor,
    reserved: socket.socket,
    tls: socket.socket | None = None,
) -> list[Acceptor]:
    """Accept DICOM associations on the reserved port (net/acceptor.py, net/services.py),
    and over TLS on the ``tls`` one if any (PS3.15 B.9)."""
    service = DicomService(archive, net, auditor)
    acceptors = [service.acceptor(reserved)]
    if tls is not None and net.tls is not None:
        acceptors.append(service.acceptor(tls, ssl_context=server_context(net.tls)))
    for acceptor in acceptors:
        acceptor.start()
    return acceptors


def _check_tls(net: NetOptions, web: WebOptions) -> None:
    """Make the SSL contexts once before anything starts: a key that does not match its
    certificate stops start-up with its message (config checked that the files are PEM).

    Raises:
        TlsError: the [tls] files cannot be used.
    """
    if net.tls is not None and net.tls_port:
        server_context(net.tls)
    if net.tls is not None and web.https:
        https_context(net.tls)


def is_loopback(host: str) -> bool:
    """``host`` reaches this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, others may reach it


def check_access(settings: Settings) -> None:
    """Secure by default: the HTTP port open beyond this machine without authentication
    only when ``[auth] allow_anonymous`` says so, with a warning at every start; a bad
    ``[auth.oidc] jwks_file`` stops start-up too.

    Raises:
        ConfigError: says how to set up users, or what is wrong with the key file.
    """
    oidc = settings.oidc_options()
    if oidc is not None and oidc.jwks_file:
        read_jwks_file(oidc.jwks_file)
    host = settings.server.host
    if settings.auth.mode != "none" or is_loopback(host):
        return
    if not settings.auth.allow_anonymous:
        raise ConfigError(
            f'[server] host = "{host}" opens the HTTP port beyond this machine, and '
            '[auth] mode = "none" would let anyone who reaches it read, store and delete. '
            'Set up users: [auth] mode = "local" (--auth-mode local), then '
            "`pypacs user add NAME --role admin`; or use an OpenID Connect issuer "
            '([auth] mode = "oidc"); or, to serve without authentication anyway, set '
            "[auth] allow_anonymous = true"
        )
    log.warning(
        '[server] host = "%s" with [auth] mode = "none" and allow_anonymous = true: '
        "anyone who reaches the HTTP port may read, store and delete",
        host,
    )


# The soft descriptor limit is raised to this when the hard limit is "unlimited".
_UNLIMITED_NOFILE = 1_048_576


def descriptor_budget(web: WebOptions) -> WebOptions:
    """Raise the soft limit of open descriptors to the hard one and keep HTTP connections to
    at most half of it.

    The other half is the DICOM side's (associations, outgoing C-MOVE associations), the
    index's, the blob files' and the logs': a flood of HTTP connections then meets
    ``[web] max_connections`` (answered 503) long before it could starve C-ECHO or C-STORE
    of a descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _UNLIMITED_NOFILE if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    if soft == resource.RLIM_INFINITY or web.max_connections <= soft // 2:
        return web
    log.warning(
        "[web] max_connections = %d lowered to %d: half of the open-file limit (%d), the rest "
        "kept for DICOM, the index and files",
        web.max_connections,
        soft // 2,
        soft,
    )
    return dataclasses.replace(web, max_connections=max(1, soft // 2))


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; prints one 'listening' line on stdout once ready.

    Both ports are bound before the archive is opened or checked, so a port in use stops
    start-up before anything is created or repaired. With ``[server] workers`` above one,
    the check runs here, once, before the workers (supervisor.py) start serving.

    Raises:
        ListenError: a port cannot be listened on.
        WorkerFailed: a worker died before every worker was serving.
    """
    net, web = settings.net_options(), descriptor_budget(settings.web_options())
    workers = worker_count(settings.server.workers)
    location = archive_location(settings)
    check_access(settings)
    _check_tls(net, web)
    with contextlib.ExitStack() as stack:
        # The DICOM port is held by this socket until the start-up check is done, then
        # handed to the association server (which binds it again, at once) or shared by
        # the workers.
        dicom_socket = stack.enter_context(
            _listen(net.host, net.port, "DICOM", "[server] dicom_port, --dicom-port")
        )
        http_socket = stack.enter_context(
            _listen(web.host, web.port, "HTTP", "[server] http_port, --http-port")
        )
        tls_socket = None
        if net.tls_port:
            tls_socket = stack.enter_context(
                _listen(
                    net.host,
                    net.tls_port,
                    "DICOM over TLS",
                    "[server] dicom_tls_port, --dicom-tls-port",
                )
            )
        archive = open_archive(settings, announce=log.info)
        opened = stack.enter_context(contextlib.ExitStack())
        opened.callback(archive.close)
        # PS3.15 A.5.3.1: the start (and, below, the stop) of the application.
        auditor = opened.enter_context(open_auditor(settings.audit_options()))
        auditor.application_started()
        if settings.storage.check_on_start:
            report = check(archive)
            log.info(
                "start-up check: %d blobs, %d re-indexed, %d missing, %d unreadable",
                report.blobs,
                len(report.reindexed),
                len(report.missing),
                len(report.unreadable),
            )
        dicom_port = dicom_socket.getsockname()[1]
        http_port = http_socket.getsockname()[1]
        tls_shown = "" if tls_socket is None else _address(net.host, net.tls_port)

        def ready() -> None:
            log.info(
                "pypacs (%s) serving AE %s: DICOM on %s%s, HTTP%s on %s, archive %s%s",
                settings.source,
                net.ae_title,
                _address(net.host, dicom_port),
                f" and over TLS on {tls_shown}" if tls_shown else "",
                "S" if web.https else "",
                _address(web.host, http_port),
                location,
                f", {workers} workers" if workers > 1 else "",
            )
            print(
                f"listening dicom={net.host}:{dicom_port} http={web.host}:{http_port}"
                + (f" dicom_tls={net.host}:{net.tls_port}" if tls_shown else ""),
                flush=True,
            )

        if workers > 1:
            # Nothing made here is used after the fork: each worker opens its own.
            opened.close()
            shares = _Shares(
                dataclasses.replace(net, max_associations=share(net.max_associations, workers)),
                dataclasses.replace(web, max_connections=share(web.max_connections, workers)),
                dicom_socket,
                http_socket,
                tls_socket,
            )
            Supervisor(workers, lambda up: _worker(settings, shares, up), ready).run()
            with open_auditor(settings.audit_options()) as stopped:
                stopped.application_stopped()
            log.info("pypacs stopped")
            return
        acceptors = _start_dimse(net, archive, auditor, dicom_socket, tls_socket)
        stack.callback(log.info, "pypacs stopped")
        for acceptor in acceptors:
            stack.callback(acceptor.stop)
        server = _Server(_http_config(archive, net, web, ready, auditor), auditor)
        asyncio.run(server.serve([http_socket]))
    sys.stdout.flush()


def _http_config(
    archive: Archive,
    net: NetOptions,
    web: WebOptions,
    ready: Callable[[], None],
    auditor: Auditor,
) -> uvicorn.Config:
    """uvicorn's settings for the archive's ASGI app; this node's jobs (started through the
    admin API, or taken over from a node that died) run from now on."""
    exporter = DimseExporter(archive, net)
    jobs = Jobs(archive, exporter, peers=net.remotes)
    jobs.start_claimer()
    config = uvicorn.Config(
        create_app(
            archive,
            web,
            on_ready=ready,
            peers=net.remotes,
            auditor=auditor,
            exporter=exporter,
            jobs=jobs,
            # [auth] mode = "oidc": bearer tokens of [auth.oidc]'s issuer (web/http/oidc.py).
            verifier=OidcVerifier(web.oidc) if web.oidc is not None else None,
        ),
        log_config=None,
        access_log=False,
        lifespan="on",
        # X-Forwarded-* are honoured only from [web] trusted_proxies (web/urls.py);
        # uvicorn's own handling would trust any peer on loopback.
        proxy_headers=False,
        # Deadlines for a request's head and body, the cap on connections and the
        # 414/431 answers live in the protocol (web/connection.py); h11's own buffer
        # limit is set past them so that those answers come first.
        http=limited_protocol(web),
        timeout_keep_alive=web.keep_alive_timeout,
        h11_max_incomplete_event_size=web.max_url_bytes + web.max_header_bytes + 1024,
    )
    if web.https and net.tls is not None:
        # HTTPS with the BCP 195 context of net/tls.py (uvicorn's own knows no minimum
        # version): set once loaded, which serving then keeps.
        config.load()
        config.ssl = https_context(net.tls)
    return config


class _Server(uvicorn.Server):
    """uvicorn's server, auditing the application's stop once it has shut down (uvicorn
    then raises the stopping signal again, so nothing after ``serve`` runs)."""

    def __init__(self, config: uvicorn.Config, auditor: Auditor) -> None:
        super().__init__(config)
        self.auditor = auditor

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        self.auditor.application_stopped()
        self.auditor.close()


@dataclasses.dataclass(frozen=True)
class _Shares:
    """What one worker serves with: its share of the caps and the shared sockets."""

    net: NetOptions
    web: WebOptions
    dicom_socket: socket.socket
    http_socket: socket.socket
    dicom_tls_socket: socket.socket | None


def _worker(settings: Settings, shares: _Shares, ready: Callable[[], None]) -> int:
    """One worker process: its own archive, DICOM and HTTP on the shared sockets."""
    stopping: list[int] = []
    # uvicorn stops on these and raises them again once stopped: here they only count.
    signal.signal(signal.SIGTERM, lambda sig, _frame: stopping.append(sig))
    signal.signal(signal.SIGINT, lambda sig, _frame: stopping.append(sig))
    configure_libraries()
    archive = Archive.open(settings.archive_options())
    auditor = open_auditor(settings.audit_options())
    try:
        net = shares.net
        acceptors = _start_dimse(
            net, archive, auditor, shares.dicom_socket, shares.dicom_tls_socket
        )
        try:
            if not stopping:
                config = _http_config(archive, net, shares.web, ready, auditor)
                asyncio.run(uvicorn.Server(config).serve([shares.http_socket]))
        finally:
            # The shared socket stays open for the other workers (Acceptor.stop leaves a
            # socket it was given alone).
            for acceptor in acceptors:
                acceptor.stop()
    finally:
        auditor.close()
        archive.close()
    return 0
