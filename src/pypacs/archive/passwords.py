"""Password hashes: scrypt (RFC 7914), a memory-hard function in the standard library.

A hash is kept as one self-describing string, ``scrypt$n=32768,r=8,p=1$SALT$KEY`` (salt and
key in unpadded base64), so that its parameters can be raised later while old hashes still
verify. Hashing costs tens of milliseconds and 32 MiB by design: callers on an event loop
run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**15, 8, 1  # RFC 7914 2: cost, block size, parallelism
SALT_BYTES = 16
KEY_BYTES = 32
# scrypt needs 128 * r * n bytes (32 MiB here); OpenSSL refuses past maxmem.
_MAX_MEM = 64 * 1024 * 1024
# A stored string with larger parameters would cost too much to check (a damaged row).
_MAX_N = 2**20


def hash_password(password: str) -> str:
    """A new hash of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, N, R, P)
    return f"{SCHEME}$n={N},r={R},p={P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False for a malformed hash."""
    try:
        scheme, params, salt_text, key_text = stored.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt, key = _unb64(salt_text), _unb64(key_text)
    except (ValueError, KeyError):
        return False
    if scheme != SCHEME or not (1 < n <= _MAX_N and 0 < r <= 16 and 0 < p <= 4) or not key:
        return False
    try:
        derived = _scrypt(password, salt, n, r, p, len(key))
    except ValueError:  # n not a power of two: a damaged row
        return False
    # Constant time: how much of the key matched must not show in the answer's timing.
    return hmac.compare_digest(derived, key)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int = KEY_BYTES) -> bytes:
    data = password.encode("utf-8")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM, dklen=size)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
