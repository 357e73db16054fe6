"""Where audit messages go: a file (one line each) and a syslog receiver.

The file is opened with ``O_APPEND`` and each message is one ``write`` of one line, so the
lines of several worker processes never interleave. Syslog messages are framed as RFC 5424
says and sent by a thread of their own from a bounded queue: a receiver that is down or
slow delays neither the file nor any request, and what does not fit is dropped and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from datetime import UTC, datetime

from pypacs.errors import ConfigError

log = logging.getLogger("pypacs.audit")

# RFC 5424 6.2.1 PRI = facility x 8 + severity; IHE ATNA (ITI TF-2 3.20.4.2): facility 10
# (security/authorization), severity 5 (notice).
_PRI = 10 * 8 + 5
_APP_NAME = "pypacs"
_MSGID = "IHE+RFC-3881"  # the MSGID IHE ATNA gives DICOM audit messages
_BOM = "\ufeff".encode()  # RFC 5424 6.4: a UTF-8 MSG starts with the BOM
# RFC 5426 3.2: the largest UDP payload over IPv4; a longer message is truncated
# (RFC 5424 6.1 allows it).
_MAX_UDP = 65_507
_CONNECT_TIMEOUT = 3.0  # seconds for a TLS receiver's TCP connect and handshake
_SEND_TIMEOUT = 10.0
_RETRY_FIRST, _RETRY_MAX = 1.0, 30.0  # back-off between two connection attempts
_REPORT_EVERY = 10.0  # seconds between two log lines about dropped messages


class Drops:
    """Messages dropped, counted; logged at once, then at most every ``_REPORT_EVERY``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._reported = 0
        self._last = -_REPORT_EVERY
        self._lock = threading.Lock()

    def add(self, why: str, n: int = 1) -> None:
        with self._lock:
            self.count += n
            now = time.monotonic()
            if now - self._last < _REPORT_EVERY:
                return
            new, self._reported, self._last = self.count - self._reported, self.count, now
        log.warning(
            "audit: %d messages dropped (%s: %s; %d in all)", new, self.what, why, self.count
        )


class FileSink:
    """Appends each message as one line to a file."""

    def __init__(self, path: str) -> None:
        """Raises:
        ConfigError: the file cannot be opened for appending.
        """
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise ConfigError(
                f'[audit] path = "{path}": cannot open for appending: {exc.strerror}'
            ) from exc
        self.drops = Drops(f"file {path}")

    def write(self, message: str) -> None:
        line = (message + "\n").encode()
        try:
            # One write of the whole line: with O_APPEND the kernel puts it at the end in
            # one piece, whichever process writes.
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(0, f"{written} of {len(line)} bytes written")
        except OSError as exc:
            self.drops.add(exc.strerror or str(exc))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def frame(message: str, host: str, when: float | None = None) -> bytes:
    """One RFC 5424 syslog message: PRI, VERSION 1, TIMESTAMP, HOSTNAME, APP-NAME, PROCID,
    MSGID, no STRUCTURED-DATA, then the message as UTF-8 with its BOM (RFC 5424 6)."""
    stamp = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    timestamp = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{_PRI}>1 {timestamp} {host or '-'} {_APP_NAME} {os.getpid()} {_MSGID} - "
    return header.encode("ascii") + _BOM + message.encode()


def _hostname() -> str:
    # RFC 5424 6.2.4: the FQDN where known, printable US-ASCII without spaces, at most 255.
    name = socket.getfqdn() or socket.gethostname()
    name = "".join(c for c in name if 33 <= ord(c) < 127)[:255]
    return name or "-"


class SyslogSink:
    """Sends messages to ``udp://HOST:PORT`` (RFC 5426: one message a datagram) or
    ``tls://HOST:PORT`` (RFC 5425: octet-counting framing, ``MSG-LEN SP SYSLOG-MSG``) from
    a thread of its own, with at most ``queue_size`` waiting."""

    def __init__(
        self,
        url: str,
        queue_size: int,
        *,
        ca: str = "",
        certificate: str = "",
        private_key: str = "",
    ) -> None:
        """Raises:
        ConfigError: the TLS files cannot be read.
        """
        scheme, _, rest = url.partition("://")
        host, _, port = rest.rpartition(":")
        self.url = url
        self.tls = scheme == "tls"
        self.address = (host.strip("[]"), int(port))
        self.host = _hostname()
        self.drops = Drops(f"syslog {url}")
        self._context = _tls_context(ca, certificate, private_key) if self.tls else None
        self._limit = queue_size
        self._pending: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        self._backoff = _RETRY_FIRST
        self._thread = threading.Thread(target=self._run, name="pypacs-audit-syslog", daemon=True)
        self._thread.start()

    def write(self, message: str) -> None:
        data = frame(message, self.host)
        with self._cond:
            if len(self._pending) >= self._limit:
                full = True
            else:
                full = False
                self._pending.append(data)
                self._cond.notify()
        if full:
            self.drops.add("queue full")

    def close(self, timeout: float) -> None:
        """Send what waits for up to ``timeout`` seconds, then stop (the rest is dropped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            left = len(self._pending)
            self._pending.clear()
        if left:
            self.drops.add("not sent at stop", left)
        self._disconnect()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                data = self._pending[0]
            if self._send(data):
                with self._cond:
                    self._pending.popleft()
            else:
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(max(0.0, self._retry_at - time.monotonic()))

    def _send(self, data: bytes) -> bool:
        if not self.tls:
            return self._send_udp(data)
        if self._sock is None and not self._connect():
            return False
        assert self._sock is not None
        try:
            # RFC 5425 4.3: octet-counting, MSG-LEN SP SYSLOG-MSG.
            self._sock.sendall(b"%d " % len(data) + data)
            return True
        except OSError as exc:
            log.warning("audit: syslog %s: %s; connecting again", self.url, exc)
            self._disconnect()
            return self._connect() and self._send(data)

    def _send_udp(self, data: bytes) -> bool:
        try:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(data[:_MAX_UDP], self.address)
        except OSError as exc:
            self.drops.add(exc.strerror or str(exc))
        return True  # a datagram is sent once, received or not

    def _connect(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        assert self._context is not None
        try:
            sock = socket.create_connection(self.address, timeout=_CONNECT_TIMEOUT)
            try:
                self._sock = self._context.wrap_socket(sock, server_hostname=self.address[0])
            except BaseException:
                sock.close()
                raise
            self._sock.settimeout(_SEND_TIMEOUT)
            self._backoff = _RETRY_FIRST
            return True
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "audit: cannot reach syslog %s: %s; next try in %.0f s",
                self.url,
                exc,
                self._backoff,
            )
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _RETRY_MAX)
            return False

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _tls_context(ca: str, certificate: str, private_key: str) -> ssl.SSLContext:
    """RFC 5425 5: the receiver's certificate checked (against ``ca``, else the system's
    roots), ours presented when configured; TLS 1.2 at least (BCP 195)."""
    try:
        context = ssl.create_default_context(cafile=ca or None)
        if certificate:
            context.load_cert_chain(certificate, private_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] files for [audit] syslog cannot be used: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
