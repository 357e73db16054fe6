"""What the audit trail needs to know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditOptions:
    """Built by config from ``[audit]`` (and ``[tls]`` for a tls:// receiver)."""

    path: str  # file the messages are appended to ("" = none)
    syslog: str  # "udp://HOST:PORT", "tls://HOST:PORT" or ""
    queue_size: int  # messages waiting; past it they are dropped and counted
    ae_title: str  # our own AE title: the audit source and our participant's UserID
    # PEM files for a tls:// receiver: the CA its certificate is checked against (empty: the
    # system's), and our client certificate and key (RFC 5425 5.1: mutual authentication).
    tls_ca: str = ""
    tls_certificate: str = ""
    tls_private_key: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.syslog)
