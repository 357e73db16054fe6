"""Index statements on the ``users``, ``api_tokens`` and ``sessions`` tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from pypacs.index.schema import api_tokens, sessions, users


def insert_user(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(insert(users).values(**values))


def user_row(conn: Connection, name: str) -> RowMapping | None:
    """The user named ``name``, if any."""
    return conn.execute(select(users).where(users.c.name == name)).mappings().first()


def user_rows(conn: Connection) -> Sequence[RowMapping]:
    """Every user, by name (a handful of rows: people, not instances)."""
    return conn.execute(select(users).order_by(users.c.name)).mappings().all()


def set_password_hash(conn: Connection, name: str, password_hash: str) -> bool:
    statement = update(users).where(users.c.name == name).values(password_hash=password_hash)
    return conn.execute(statement).rowcount == 1


def delete_user(conn: Connection, name: str) -> bool:
    """Remove the user with their tokens and sessions; whether there was one."""
    conn.execute(delete(api_tokens).where(api_tokens.c.user_name == name))
    conn.execute(delete(sessions).where(sessions.c.user_name == name))
    return conn.execute(delete(users).where(users.c.name == name)).rowcount == 1


def insert_token(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(insert(api_tokens).values(**values))


def token_row(conn: Connection, token_hash: str) -> RowMapping | None:
    """The token with this hash and the role of its user (None when either is gone)."""
    statement = (
        select(api_tokens, users.c.role)
        .join(users, users.c.name == api_tokens.c.user_name)
        .where(api_tokens.c.token_hash == token_hash)
    )
    return conn.execute(statement).mappings().first()


def token_rows(conn: Connection, user_name: str | None) -> Sequence[RowMapping]:
    """The tokens of one user (or of all), oldest first."""
    statement = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if user_name is not None:
        statement = statement.where(api_tokens.c.user_name == user_name)
    return conn.execute(statement).mappings().all()


def revoke_token(conn: Connection, token_id: str, stamp: str) -> bool:
    """Mark the token revoked (once); whether a token with this id exists."""
    if conn.execute(select(api_tokens.c.id).where(api_tokens.c.id == token_id)).first() is None:
        return False
    conn.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=stamp)
    )
    return True


def insert_session(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(insert(sessions).values(**values))


def session_row(conn: Connection, session_hash: str) -> RowMapping | None:
    """The session with this hash and the role of its user (None when either is gone)."""
    statement = (
        select(sessions, users.c.role)
        .join(users, users.c.name == sessions.c.user_name)
        .where(sessions.c.session_hash == session_hash)
    )
    return conn.execute(statement).mappings().first()


def delete_session(conn: Connection, session_hash: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.session_hash == session_hash))


def delete_expired_sessions(conn: Connection, stamp: str) -> int:
    """Forget the sessions that expired before ``stamp``; how many."""
    return conn.execute(delete(sessions).where(sessions.c.expires_at < stamp)).rowcount
