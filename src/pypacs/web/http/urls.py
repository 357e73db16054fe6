"""The public address of the HTTP front door: every absolute URL pypacs writes (RetrieveURL,
BulkDataURI, Content-Location, Warning agents) starts with ``public_root(request)``.

``[web] base_url`` wins when set. Otherwise the address is the one the request reached:
its scheme, its Host header and the server's own root path. ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` are read only when the TCP peer is one of
``[web] trusted_proxies``; from anyone else they are ignored. A Host header without a port
(as some clients send it) names the port the server listens on, not the scheme's default,
unless a trusted proxy forwarded the request (then the public port is the scheme's default
or the one X-Forwarded-Host names).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import Request

from pypacs.web.options import (
    DEFAULT_PORTS,
    Network,
    WebOptions,
    parse_base_url,
    parse_networks,
    valid_host,
    valid_prefix,
)


@dataclass(frozen=True)
class PublicAddress:
    """How absolute URLs are made: a fixed base, or from each request."""

    base_url: str = ""  # already checked by parse_base_url; "" = from the request
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def of(cls, options: WebOptions) -> PublicAddress:
        """The address the options describe.

        Raises:
            ValueError: base_url or trusted_proxies is malformed (config checks them first).
        """
        base = parse_base_url(options.base_url) if options.base_url else ""
        return cls(base, parse_networks(options.trusted_proxies))

    def root(self, request: Request) -> str:
        """The server's public root URL, without a trailing slash."""
        if self.base_url:
            return self.base_url
        scope = request.scope
        headers = Headers(scope=scope)
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        host = headers.get("host", "")
        prefix = ""
        forwarded = False
        if self._trusted(scope.get("client")):
            proto = _first(headers.get("x-forwarded-proto")).lower()
            if proto in DEFAULT_PORTS:
                scheme, forwarded = proto, True
            forwarded_host = _first(headers.get("x-forwarded-host"))
            if valid_host(forwarded_host):
                host, forwarded = forwarded_host, True
            forwarded_prefix = _first(headers.get("x-forwarded-prefix"))
            if valid_prefix(forwarded_prefix):
                prefix = forwarded_prefix.rstrip("/")
        server = scope.get("server")
        if not valid_host(host):
            host = _authority(server[0], server[1]) if server else "localhost"
        elif not forwarded and server and _without_port(host, server[1], scheme):
            # A Host without a port: the port this server answered on. RFC 9110 7.2 makes
            # it the scheme's default, which is not where pypacs listens.
            host = f"{host}:{server[1]}"
        return f"{scheme}://{host}{prefix}{scope.get('root_path', '').rstrip('/')}"

    def _trusted(self, client: tuple[str, int] | None) -> bool:
        if not self.trusted_proxies or not client:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in network for network in self.trusted_proxies)


def _first(value: str | None) -> str:
    """The first of a comma-separated list of values (the proxy nearest the client)."""
    return (value or "").split(",")[0].strip()


def _without_port(host: str, listening: int, scheme: str) -> bool:
    """Whether ``host`` names no port while the server listens on another than the default."""
    return ":" not in host.rsplit("]", 1)[-1] and listening != DEFAULT_PORTS[scheme]


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def public_root(request: Request) -> str:
    """The public root URL (no trailing slash) of the server ``request`` reached, as
    ``create_app`` set it up."""
    address = getattr(request.app.state, "public_address", None)
    if not isinstance(address, PublicAddress):
        address = PublicAddress()
    return address.root(request)


def public_url(request: Request, path: str) -> str:
    """The absolute URL of ``path`` (which starts with "/") on this server."""
    return public_root(request) + path
