"""The SSL contexts of DICOM over TLS (PS3.15 B.9 "BCP 195 TLS Profile" and B.10
"Non-downgrading BCP 195 TLS Profile"): TLS 1.2 and 1.3 only, with the cipher suites BCP 195
recommends, for pypacs' TLS port (and HTTPS) and for pypacs as a TLS client.

Peers are authenticated by their certificate chaining to ``[tls] ca``, not by name: DICOM
peers are mostly addressed by IP address, and PS3.15 B asks for no host name check, so a
client does not compare the server's certificate with the address it dialled.
"""

from __future__ import annotations

import functools
import ssl

from pypacs.errors import ConfigError
from pypacs.net.options import TlsOptions

# RFC 9325 (BCP 195) 4.2: for TLS 1.2, ECDHE key exchange with AEAD ciphers only
# (AES-GCM; ChaCha20-Poly1305 too, RFC 9325 4.2.1). TLS 1.3's own suites all qualify.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


class TlsError(ConfigError):
    """The [tls] files cannot make an SSL context: a key that does not match its
    certificate, a CA file OpenSSL cannot read."""


def _bcp195(context: ssl.SSLContext) -> ssl.SSLContext:
    # RFC 9325 3.1.1: TLS 1.2 at least, never SSL or TLS 1.0/1.1 (RFC 8996).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(BCP195_CIPHERS)
    # RFC 9325 3.3: no TLS-level compression (CRIME); 3.5: no renegotiation.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load_chain(context: ssl.SSLContext, tls: TlsOptions) -> None:
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"[tls] certificate = {tls.certificate!r}, private_key = {tls.private_key!r}: "
            f"cannot be used together: {exc}"
        ) from exc


def _load_ca(context: ssl.SSLContext, tls: TlsOptions) -> None:
    try:
        context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"[tls] ca = {tls.ca!r}: cannot be used: {exc}") from exc


@functools.lru_cache(maxsize=8)
def server_context(tls: TlsOptions) -> ssl.SSLContext:
    """The context of pypacs' DICOM TLS port: our certificate; a client's certificate
    required (``require_client_certificate``) or, with a ``ca``, checked when sent.

    Raises:
        TlsError: the files cannot be used.
    """
    tls.check()
    context = _bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, tls)
    if tls.ca:
        _load_ca(context, tls)
        # PS3.15 B.9: both ends are authenticated by their certificates.
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    elif tls.require_client_certificate:
        raise TlsError("[tls] require_client_certificate = true: needs [tls] ca to check them")
    return context


@functools.lru_cache(maxsize=8)
def https_context(tls: TlsOptions) -> ssl.SSLContext:
    """The context of the HTTP port over TLS: our certificate, no client certificate
    asked for (HTTP users authenticate by password or token).

    Raises:
        TlsError: the files cannot be used.
    """
    tls.check()
    context = _bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, tls)
    context.verify_mode = ssl.CERT_NONE
    # RFC 7301: HTTP/1.1 is what the HTTP port speaks.
    context.set_alpn_protocols(["http/1.1"])
    return context


@functools.lru_cache(maxsize=8)
def client_context(tls: TlsOptions) -> ssl.SSLContext:
    """The context pypacs connects to a TLS peer with: our certificate sent, the peer's
    checked against ``ca`` (the system's store when there is none), its name not checked
    (see the module's docstring).

    Raises:
        TlsError: the files cannot be used.
    """
    tls.check()
    context = _bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    _load_chain(context, tls)
    if tls.ca:
        _load_ca(context, tls)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context
