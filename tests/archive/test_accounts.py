"""Password hashes, and the users, tokens and sessions the index keeps (on each backend)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pypacs.archive import Archive
from pypacs.archive.accounts import AccountError, Accounts
from pypacs.archive.passwords import hash_password, verify_password
from pypacs.index import schema
from pypacs.model.access import Role


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_a_hash_names_its_parameters_and_salt() -> None:
    scheme, params, salt, key = hash_password("correct horse").split("$")
    assert (scheme, params) == ("scrypt", "n=32768,r=8,p=1")
    assert len(salt) == 22 and len(key) == 43  # 16 and 32 bytes, unpadded base64


def test_two_hashes_of_one_password_differ() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second
    assert first.split("$")[2] != second.split("$")[2]
    assert verify_password("correct horse", first) and verify_password("correct horse", second)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$n=32768,r=8,p=1$AAAA$AAAA",
        "scrypt$n=32768,r=8$AAAA$AAAA",
        "scrypt$n=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,  # n not a power of 2
        "scrypt$n=32768,r=8,p=1$!!!$AAAA",
    ],
)
def test_a_malformed_hash_verifies_nothing(stored: str) -> None:
    assert not verify_password("anything", stored)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_users_tokens_and_sessions(archive: Archive) -> None:
    clock = Clock()
    accounts = Accounts(archive.engine, clock)
    accounts.add_user("alice", Role.WRITER, "alice-password")
    assert [(u.name, u.role) for u in accounts.users()] == [("alice", Role.WRITER)]
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_user("alice", Role.READER, "another-password")
    assert accounts.authenticate("alice", "alice-password") is not None
    assert accounts.authenticate("alice", "wrong-password") is None
    assert accounts.authenticate("bob", "alice-password") is None

    made = accounts.create_token("alice", days=2)
    user = accounts.token_user(made.secret)
    assert user is not None and (user.name, user.role) == ("alice", Role.WRITER)
    # Only the token's SHA-256 is in the index.
    with archive.engine.connect() as conn:
        rows = list(conn.execute(sa.select(schema.api_tokens)))
    assert [r.token_hash for r in rows] == [hashlib.sha256(made.secret.encode()).hexdigest()]
    assert made.secret not in repr(rows)
    clock.now += timedelta(days=2)  # expired the moment its lifetime ends
    assert accounts.token_user(made.secret) is None

    lasting = accounts.create_token("alice")
    assert accounts.token_user(lasting.secret) is not None
    accounts.revoke_token(lasting.token.id)
    assert accounts.token_user(lasting.secret) is None
    assert [t.revoked is not None for t in accounts.tokens("alice")] == [False, True]
    with pytest.raises(AccountError, match="no token"):
        accounts.revoke_token("nonesuch")

    session = accounts.open_session("alice", hours=1)
    assert accounts.session_user(session) is not None
    clock.now += timedelta(minutes=61)
    assert accounts.session_user(session) is None
    session = accounts.open_session("alice", hours=1)
    accounts.close_session(session)
    assert accounts.session_user(session) is None

    accounts.remove_user("alice")
    assert accounts.users() == [] and accounts.tokens() == []
    with pytest.raises(AccountError, match="no user"):
        accounts.remove_user("alice")
    with pytest.raises(AccountError, match="no user"):
        accounts.create_token("alice")


def test_a_password_change_or_removal_ends_the_remembered_check(archive: Archive) -> None:
    accounts = archive.accounts
    accounts.add_user("carol", Role.READER, "first-password")
    assert accounts.authenticate("carol", "first-password") is not None  # now remembered
    accounts.set_password("carol", "second-password")
    assert accounts.authenticate("carol", "first-password") is None
    assert accounts.authenticate("carol", "second-password") is not None
    accounts.remove_user("carol")
    assert accounts.authenticate("carol", "second-password") is None


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("", "long-enough", "user name"),
        ("a:b", "long-enough", "no colon"),
        (" padded", "long-enough", "user name"),
        ("x" * 65, "long-enough", "user name"),
        ("dave", "short", "at least 8"),
    ],
)
def test_names_and_passwords_refused(
    archive: Archive, name: str, password: str, message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        archive.accounts.add_user(name, Role.READER, password)
    assert archive.accounts.users() == []
