"""OpenID Connect bearer tokens: a JWT access token → the Principal it names.

The issuer's keys come from a JWKS file (read once, at start) or a JWKS URL (fetched in
the background at start, cached, fetched again when a token names a key the cache lacks,
at most once a minute). Signatures are checked by PyJWT; pypacs only chooses what it
accepts:

- asymmetric algorithms only (RFC 7518 3.1 minus ``none`` and the HMAC family: with an
  issuer's public key an HMAC "signature" could be made by anyone who has the key);
- ``exp``, ``iss`` and ``aud`` present and right; ``nbf`` and ``iat`` honoured; 30 seconds
  of leeway for clocks apart (RFC 7519 4.1.4-4.1.6);
- the role is the highest of reader, writer, admin in the roles claim (a list, a string of
  space-separated names, or a dotted path into the claims such as Keycloak's
  ``realm_access.roles``).

``principal()`` may wait for a key fetch (at most ``FETCH_TIMEOUT`` seconds): call it off
the event loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from pypacs.errors import ConfigError, NotAuthenticated, NotAuthorized
from pypacs.model.access import Principal, Role
from pypacs.web.options import OidcOptions

log = logging.getLogger("pypacs.web.oidc")

# RFC 7518 3.1 (and RFC 8037 3.1 for EdDSA): the asymmetric "alg" values, by the JWK key
# type (RFC 7518 6.1) that verifies them. "none" and HS256/384/512 are never accepted.
ALGORITHMS: Mapping[str, str] = {
    **{f"RS{bits}": "RSA" for bits in (256, 384, 512)},
    **{f"PS{bits}": "RSA" for bits in (256, 384, 512)},
    **{f"ES{bits}": "EC" for bits in (256, 384, 512)},
    "EdDSA": "OKP",
}
LEEWAY_SECONDS = 30
# A JWKS URL is fetched again at most this often, whatever tokens ask for.
REFRESH_INTERVAL = 60.0
# Keys this old are fetched again at their next use (a revoked key leaves the cache).
MAX_KEY_AGE = 3600.0
FETCH_TIMEOUT = 10.0
MAX_JWKS_BYTES = 1024 * 1024
_ROLES_BY_RANK = sorted(Role, key=lambda role: role.rank, reverse=True)


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    alg: str | None  # the JWK's own "alg", when it names one (RFC 7517 4.4)
    key: Any  # a cryptography public key object


def parse_jwks(data: Any, source: str) -> tuple[_Key, ...]:
    """The signature keys of a JWK Set (RFC 7517 5) that pypacs may use.

    Keys for encryption (``"use": "enc"``), symmetric keys and keys PyJWT cannot read are
    left out, with a log line each.

    Raises:
        ValueError: not a JWK Set, or no usable key in it.
    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source}: not a JWK Set (a JSON object with a 'keys' list)")
    keys = []
    for number, entry in enumerate(data["keys"]):
        kty = entry.get("kty") if isinstance(entry, dict) else None
        alg = entry.get("alg") if isinstance(entry, dict) else None
        why = None
        if kty not in set(ALGORITHMS.values()):
            why = f"key type {kty!r} is not an asymmetric one pypacs accepts"
        elif entry.get("use", "sig") != "sig":
            why = "not a signature key"
        elif alg is not None and ALGORITHMS.get(alg) != kty:
            why = f"algorithm {alg!r} is not an asymmetric one for key type {kty}"
        if why is None:
            try:
                key = jwt.PyJWK(entry).key
            except jwt.PyJWTError as exc:
                why = str(exc)
        if why is not None:
            log.warning("%s: key %d (kid %r) left out: %s", source, number, _kid(entry), why)
            continue
        keys.append(_Key(_kid(entry), str(kty), alg, key))
    if not keys:
        raise ValueError(f"{source}: no usable signature key in the JWK Set")
    return tuple(keys)


def _kid(entry: Any) -> str | None:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    return kid if isinstance(kid, str) else None


def read_jwks_file(path: str) -> tuple[_Key, ...]:
    """The keys of ``[auth.oidc] jwks_file``.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or holds no usable key.
    """
    where = f"[auth.oidc] jwks_file = {path!r}"
    try:
        data = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from exc
    try:
        return parse_jwks(data, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def fetch_jwks(url: str) -> tuple[_Key, ...]:
    """The keys at a JWKS URL.

    Raises:
        OSError: the URL cannot be fetched (or answers another status than 200).
        ValueError: the answer is not a JWK Set with a usable key.
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"{url}: larger than {MAX_JWKS_BYTES} bytes")
    return parse_jwks(json.loads(body), url)


class _KeyCache:
    """The keys of a JWKS URL, fetched at most once per ``interval`` seconds."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], tuple[_Key, ...]],
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: tuple[_Key, ...] = ()
        self._fetched_at: float | None = None  # of the keys held
        self._tried_at: float | None = None  # of the last attempt, failed or not

    def start(self) -> None:
        """Fetch in the background, so that the first token need not wait."""
        threading.Thread(target=self.refresh, name="pypacs-jwks", daemon=True).start()

    def keys(self, wanted: str | None) -> tuple[_Key, ...]:
        """The cached keys, fetched again first when ``wanted`` (a kid) is not among them
        or they are old, and the last attempt is long enough ago."""
        with self._lock:
            keys, fetched_at = self._keys, self._fetched_at
        old = fetched_at is None or self._clock() - fetched_at > MAX_KEY_AGE
        if old or (wanted is not None and all(k.kid != wanted for k in keys)):
            self.refresh()
            with self._lock:
                keys = self._keys
        return keys

    def refresh(self) -> None:
        """Fetch the key set unless the last attempt is under ``interval`` seconds old; a
        failure is logged and the keys held are kept."""
        with self._lock:
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self._interval:
                return
            self._tried_at = now
            try:
                keys = self._fetch(self.url)
            except (OSError, ValueError) as exc:
                # urllib's URLError and HTTPError are OSErrors; bad JSON is a ValueError.
                log.error("cannot fetch the OIDC keys from %s: %s", self.url, exc)
                return
            self._keys, self._fetched_at = keys, now
            log.info("OIDC keys fetched from %s: %d", self.url, len(keys))


class OidcVerifier:
    """Checks bearer tokens of ``[auth.oidc]``'s issuer and names who they are for."""

    def __init__(
        self,
        options: OidcOptions,
        *,
        fetch: Callable[[str], tuple[_Key, ...]] = fetch_jwks,
        refresh_interval: float = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the key file, or start fetching the key URL in the background.

        Raises:
            ConfigError: the key file cannot be read or holds no usable key.
        """
        self.options = options
        self._file_keys: tuple[_Key, ...] = ()
        self._cache: _KeyCache | None = None
        if options.jwks_file:
            self._file_keys = read_jwks_file(options.jwks_file)
        else:
            self._cache = _KeyCache(options.jwks_url, fetch, refresh_interval, clock)
            self._cache.start()

    def principal(self, token: str) -> Principal:
        """Who a valid token is for, with the highest pypacs role it names.

        Raises:
            NotAuthenticated: the token is malformed, signed by no key of the issuer, with
                an algorithm not accepted, expired, not yet valid, or for another issuer
                or audience (HTTP 401).
            NotAuthorized: a good token naming none of reader, writer, admin (HTTP 403).
        """
        claims = self._claims(token)
        name = claims.get("preferred_username") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise NotAuthenticated("the token names no preferred_username and no sub")
        role = role_of(claims, self.options.roles_claim)
        if role is None:
            raise NotAuthorized(
                f"the token's {self.options.roles_claim!r} claim names none of the roles "
                + ", ".join(Role)
            )
        return Principal(name=name, role=role, method="oidc")

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(f"not a JWT: {exc}") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise NotAuthenticated(f"the token's algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = self._key(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.options.audience,
                issuer=self.options.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(f"token refused: {exc}") from exc
        # RFC 7519 4.1.6: a token issued in the future is not yet valid (whatever PyJWT's
        # version does about it).
        iat = claims.get("iat")
        if isinstance(iat, int | float) and iat > time.time() + LEEWAY_SECONDS:
            raise NotAuthenticated("token refused: issued in the future (iat)")
        return claims

    def _key(self, kid: str | None, alg: str) -> _Key:
        if self._cache is not None:
            keys = self._cache.keys(kid)
            if not keys:
                raise NotAuthenticated(f"the issuer's keys are not available ({self._cache.url})")
        else:
            keys = self._file_keys
        if kid is not None:
            found = [k for k in keys if k.kid == kid]
        else:
            # RFC 7515 4.1.4: without a kid, the key must be otherwise clear: the only one.
            found = list(keys) if len(keys) == 1 else []
        if not found:
            raise NotAuthenticated(f"no key of the issuer has the token's kid {kid!r}")
        key = found[0]
        if ALGORITHMS[alg] != key.kty or (key.alg is not None and key.alg != alg):
            raise NotAuthenticated(f"the token's algorithm {alg} does not fit its key {kid!r}")
        return key


def role_of(claims: Mapping[str, Any], claim: str) -> Role | None:
    """The highest pypacs role in ``claims[claim]``: a list of names, or a string of
    space-separated names; a claim of that exact name first, else a dotted path
    (``realm_access.roles``)."""
    value: Any = claims.get(claim)
    if value is None and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        names = set(value.split())
    elif isinstance(value, list):
        names = {v for v in value if isinstance(v, str)}
    else:
        return None
    return next((role for role in _ROLES_BY_RANK if role.value in names), None)
