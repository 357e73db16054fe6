"""What the HTTP front door needs to know."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AuthOptions:
    """``[auth]`` as the HTTP port uses it (web/http/auth.py)."""

    mode: str  # "none", "local" or "oidc"
    session_hours: int  # a web page log-in's lifetime
    max_failed_logins: int  # within 15 minutes, from one address or for one name: then 429


@dataclass(frozen=True)
class WebOptions:
    """Built by config from the settings, whose table holds the defaults."""

    host: str
    port: int
    https: bool  # the port is served over TLS ([server] http_tls)
    ae_title: str  # RetrieveAETitle in QIDO-RS answers
    pn_case_insensitive: bool
    auth: AuthOptions  # who may use the port ([auth])
    max_results: int  # past it a search fails (413); 0: no maximum
    # PS3.18 8.3.4.4 lets the origin server cap a search that gives no limit.
    qido_default_limit: int
    stow_max_bytes: int
    stow_max_part_bytes: int  # one part, spooled to disk as it arrives
    stow_max_parts: int
    # Rendering (web/renderlimits.py): the largest decoded frame, and all renders at once.
    render_max_frame_bytes: int
    render_max_bytes_in_flight: int
    # The public address absolute URLs start with ("" = the address each request reached)
    # and the peers whose X-Forwarded-* headers are believed (web/urls.py).
    base_url: str
    trusted_proxies: tuple[str, ...]
    # Bounds of one HTTP connection (web/connection.py), in seconds and bytes.
    header_timeout: int  # the request line and headers, from their first byte
    body_timeout: int  # longest wait for the next piece of a request body
    keep_alive_timeout: int  # an idle connection between two requests
    max_connections: int  # HTTP connections open at once; more are refused (503)
    max_url_bytes: int  # longest request target (path and query): 414
    max_header_bytes: int  # largest header section: 431
    # Origins whose pages may call /dicom-web and /api with credentials (web/http/cors.py).
    cors_origins: tuple[str, ...]
    # The OIDC issuer whose bearer tokens are accepted (web/http/oidc.py); None unless
    # [auth] mode = "oidc".
    oidc: OidcOptions | None
    # The folder of the installed OHIF viewers (web/page/ohif.py), served at /viewer/.
    viewer_root: str


@dataclass(frozen=True)
class OidcOptions:
    """``[auth.oidc]``, checked by config: issuer and audience set, and exactly one of
    ``jwks_url`` (http or https) and ``jwks_file``."""

    issuer: str
    audience: str
    jwks_url: str
    jwks_file: str
    roles_claim: str  # a claim's name, or a dotted path into the claims


DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 7.2 / RFC 3986 3.2.2: host (reg-name, IPv4 or [IPv6]) and an optional port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::(\d{1,5}))?")
# A path prefix: segments of RFC 3986 pchar, no query, no fragment, no dot segments.
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?")


def parse_base_url(text: str) -> str:
    """``[web] base_url`` as used: scheme, authority and path without a trailing slash.

    Raises:
        ValueError: not an absolute http(s) URL without query or fragment.
    """
    parts = urlsplit(text.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc:
        raise ValueError("an absolute http:// or https:// URL, e.g. https://pacs.example.org/pacs")
    if parts.query or parts.fragment or not _HOST.fullmatch(parts.netloc):
        raise ValueError("an http(s) URL with a host and a path only (no query, no fragment)")
    if parts.path and not valid_prefix(parts.path):
        raise ValueError("an http(s) URL whose path is plain segments")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def parse_networks(entries: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    """``[web] trusted_proxies``: IP addresses (one host each) and CIDR networks.

    Raises:
        ValueError: an entry is neither.
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError:
            raise ValueError(
                f"{entry!r} is neither an IP address nor a network with its host bits zero"
            ) from None
    return tuple(networks)


def valid_host(text: str) -> bool:
    match = _HOST.fullmatch(text)
    return match is not None and (match.group(1) is None or 0 < int(match.group(1)) < 65536)


def valid_prefix(text: str) -> bool:
    return (
        text.startswith("/")
        and _PREFIX.fullmatch(text) is not None
        and not any(s in ("..", ".") for s in text.split("/"))
    )
