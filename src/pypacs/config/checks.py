"""The checks of setting values: each returns what was expected, or None when the value is
fine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pypacs.model.access import ALL_SERVICES, Service
from pypacs.web.options import parse_base_url, parse_networks

Check = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def _port(allow_zero: bool) -> Check:
    low = 0 if allow_zero else 1

    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= 65535
        return None if ok else f"an integer {low}-65535"

    return check


def _ae_title(value: Any) -> str | None:
    # PS3.5 6.2, VR AE: 1 to 16 characters of the default repertoire, no backslash or
    # control characters, not only spaces.
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= 16
        and value.strip() != ""
        and all(32 <= ord(c) < 127 and c != "\\" for c in value)
    )
    return None if ok else "an AE title of 1-16 printable ASCII characters without backslash"


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "a positive integer"


def _non_negative_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "an integer >= 0"


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(choices)

    return check


def _base_url(value: Any) -> str | None:
    if value == "":
        return None
    try:
        parse_base_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _networks(value: Any) -> str | None:
    expected = 'a list of IP addresses or CIDR networks (e.g. ["127.0.0.1", "10.0.0.0/8"])'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return expected
    try:
        parse_networks(value)
    except ValueError as exc:
        return f"{expected}; {exc}"
    return None


def _services(value: Any) -> str | None:
    ok = isinstance(value, list) and all(v in set(Service) for v in value)
    return None if ok else "a list of services among " + ", ".join(ALL_SERVICES)


def _url_of(*schemes: str) -> Check:
    """A ``scheme://host:port`` address with one of ``schemes`` (or "" for none)."""

    def check(value: Any) -> str | None:
        expected = " or ".join(f'"{s}://HOST:PORT"' for s in schemes) + ' or ""'
        if value == "":
            return None
        scheme, sep, rest = value.partition("://") if isinstance(value, str) else ("", "", "")
        host, colon, port = rest.rpartition(":")
        ok = sep and scheme in schemes and colon and host and port.isdigit()
        return None if ok and 0 < int(port) < 65536 else expected

    return check


def _origins(value: Any) -> str | None:
    # An origin is scheme://host[:port] (RFC 6454), no path and no trailing slash.
    ok = isinstance(value, list) and all(
        isinstance(v, str)
        and v.split("://", 1)[0] in ("http", "https")
        and "://" in v
        and "/" not in v.split("://", 1)[1]
        and v.split("://", 1)[1] != ""
        for v in value
    )
    return None if ok else 'a list of origins such as "https://viewer.example"'


def _storage_url(value: Any) -> str | None:
    ok = value == "" or (
        isinstance(value, str)
        and value.startswith("s3://")
        and value[len("s3://") :].split("/", 1)[0] != ""
    )
    return None if ok else '"" (files under [storage] path) or "s3://BUCKET/PREFIX"'
