"""The HTTP port's local accounts: users with a role and a password, their API tokens and
their web page sessions, kept in the index so that every node and worker sees the same.

Tokens and session ids are random (256 bits) and stored as SHA-256 hashes only: a copy of
the index does not let anyone in. Each check reads the index (a look-up by a unique key), so
a removed user, a revoked token or a changed password stops working on the next request,
in every process. Only the costly part of a password check (scrypt) is remembered, for
``PASSWORD_CACHE_SECONDS``, keyed by a hash of the name, the password and the stored hash:
a client that sends Basic credentials with every request pays scrypt once a minute.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from pypacs.archive.passwords import hash_password, verify_password
from pypacs.errors import PypacsError
from pypacs.index import accounts as sql
from pypacs.index import tx
from pypacs.model.access import Role

PASSWORD_CACHE_SECONDS = 60.0
_PASSWORD_CACHE_MAX = 1024  # entries; past it the cache starts afresh
MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 64
TOKEN_PREFIX = "pypacs_"  # tells a person (and secret scanners) what a token is for


class AccountError(PypacsError):
    """A user or token that does not exist, already exists, or a name or password refused."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: str


@dataclass(frozen=True)
class Token:
    """An API token as listed: never the token itself, which only its creator saw."""

    id: str
    user: str
    created: str
    expires: str | None  # None: never
    revoked: str | None

    def active(self, now: datetime) -> bool:
        return self.revoked is None and (self.expires is None or now < _time(self.expires))


@dataclass(frozen=True)
class NewToken:
    token: Token
    secret: str  # what the client sends as ``Authorization: Bearer``; shown once


def check_name(name: str) -> None:
    """Refuse a user name that HTTP Basic cannot carry or a person cannot read.

    Raises:
        AccountError: naming what a user name must be.
    """
    # RFC 7617 2: the user-id cannot contain a colon; control characters are refused.
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or ":" in name
        or name != name.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise AccountError(
            f"user name {name!r} refused: 1-{MAX_NAME_LENGTH} characters, no colon, no "
            "control characters, no leading or trailing space"
        )


def check_password(password: str) -> None:
    """Raises:
    AccountError: the password is shorter than MIN_PASSWORD_LENGTH."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


class Accounts:
    """Users, tokens and sessions in the index; thread-safe (each call is one transaction)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        self._verified: dict[bytes, float] = {}  # credential digest -> monotonic deadline
        self._lock = threading.Lock()

    # -- users ----------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str) -> User:
        """A new user.

        Raises:
            AccountError: the name or password is refused, or the user exists.
        """
        check_name(name)
        check_password(password)
        created = _stamp(self._clock())
        values = {
            "name": name,
            "role": role.value,
            "password_hash": hash_password(password),
            "created_at": created,
        }

        def add(conn: Connection) -> bool:
            if sql.user_row(conn, name) is not None:
                return False
            sql.insert_user(conn, values)
            return True

        try:
            added = tx.write(self.engine, add)
        except IntegrityError:  # another process added the name meanwhile
            added = False
        if not added:
            raise AccountError(f"user {name!r} exists already")
        return User(name, role, created)

    def set_password(self, name: str, password: str) -> None:
        """Raises:
        AccountError: the password is refused or there is no such user."""
        check_password(password)
        new_hash = hash_password(password)
        if not tx.write(self.engine, lambda conn: sql.set_password_hash(conn, name, new_hash)):
            raise AccountError(f"no user {name!r}")

    def remove_user(self, name: str) -> None:
        """Remove the user, their tokens and their sessions.

        Raises:
            AccountError: there is no such user.
        """
        if not tx.write(self.engine, lambda conn: sql.delete_user(conn, name)):
            raise AccountError(f"no user {name!r}")

    def users(self) -> list[User]:
        return [_user(row) for row in tx.read(self.engine, sql.user_rows)]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None. Costs one scrypt (tens of ms) unless
        the same credentials were checked within PASSWORD_CACHE_SECONDS: call it in a thread.
        """
        row = tx.lookup(self.engine, lambda conn: sql.user_row(conn, name))
        if row is None:
            # As long as a real check, so that timing does not tell which names exist.
            verify_password(password, _DUMMY_HASH)
            return None
        stored = row["password_hash"]
        digest = hashlib.sha256("\0".join((name, password, stored)).encode("utf-8")).digest()
        now = time.monotonic()
        with self._lock:
            deadline = self._verified.get(digest)
        if deadline is not None and now < deadline:
            return _user(row)
        if not verify_password(password, stored):
            return None
        with self._lock:
            if len(self._verified) >= _PASSWORD_CACHE_MAX:
                self._verified.clear()
            self._verified[digest] = now + PASSWORD_CACHE_SECONDS
        return _user(row)

    # -- tokens ---------------------------------------------------------------------------

    def create_token(self, name: str, days: int | None = None) -> NewToken:
        """A new API token for the user, valid ``days`` days (None: until revoked).

        Raises:
            AccountError: there is no such user, or ``days`` is not positive.
        """
        if days is not None and days <= 0:
            raise AccountError(f"a token's lifetime is a positive number of days, not {days}")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        token = Token(
            id=secrets.token_hex(6),
            user=name,
            created=_stamp(now),
            expires=_stamp(now + timedelta(days=days)) if days is not None else None,
            revoked=None,
        )
        values = {
            "id": token.id,
            "user_name": name,
            "token_hash": _digest(secret),
            "created_at": token.created,
            "expires_at": token.expires,
        }

        def create(conn: Connection) -> bool:
            if sql.user_row(conn, name) is None:
                return False
            sql.insert_token(conn, values)
            return True

        if not tx.write(self.engine, create):
            raise AccountError(f"no user {name!r}")
        return NewToken(token, secret)

    def revoke_token(self, token_id: str) -> None:
        """Raises:
        AccountError: no token has this id."""
        stamp = _stamp(self._clock())
        if not tx.write(self.engine, lambda conn: sql.revoke_token(conn, token_id, stamp)):
            raise AccountError(f"no token {token_id!r}")

    def tokens(self, name: str | None = None) -> list[Token]:
        """The tokens of the user (of everyone when None).

        Raises:
            AccountError: there is no user ``name``.
        """

        def read(conn: Connection) -> list[RowMapping] | None:
            if name is not None and sql.user_row(conn, name) is None:
                return None
            return list(sql.token_rows(conn, name))

        rows = tx.read(self.engine, read)
        if rows is None:
            raise AccountError(f"no user {name!r}")
        return [_token(row) for row in rows]

    def token_user(self, secret: str) -> User | None:
        """The user of an active token (not revoked, not expired), else None."""
        row = tx.lookup(self.engine, lambda conn: sql.token_row(conn, _digest(secret)))
        if row is None or not _token(row).active(self._clock()):
            return None
        return User(row["user_name"], Role(row["role"]), row["created_at"])

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, name: str, hours: int) -> str:
        """A new session id for the user, valid ``hours`` hours; only its hash is kept."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        values = {
            "session_hash": _digest(session_id),
            "user_name": name,
            "expires_at": _stamp(now + timedelta(hours=hours)),
        }

        def open_(conn: Connection) -> None:
            sql.delete_expired_sessions(conn, _stamp(now))
            sql.insert_session(conn, values)

        tx.write(self.engine, open_)
        return session_id

    def session_user(self, session_id: str) -> User | None:
        """The user of a session that has not expired, else None."""
        row = tx.lookup(self.engine, lambda conn: sql.session_row(conn, _digest(session_id)))
        if row is None or _time(row["expires_at"]) <= self._clock():
            return None
        return User(row["user_name"], Role(row["role"]), "")

    def close_session(self, session_id: str) -> None:
        tx.write(self.engine, lambda conn: sql.delete_session(conn, _digest(session_id)))


# verify_password against this costs what a real check costs; no password matches it.
_DUMMY_HASH = (
    "scrypt$n=32768,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _user(row: RowMapping) -> User:
    return User(row["name"], Role(row["role"]), row["created_at"])


def _token(row: RowMapping) -> Token:
    return Token(
        id=row["id"],
        user=row["user_name"],
        created=row["created_at"],
        expires=row["expires_at"],
        revoked=row["revoked_at"],
    )
