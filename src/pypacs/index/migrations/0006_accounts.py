"""Version 6: the ``users``, ``api_tokens`` and ``sessions`` tables of the HTTP port's
local accounts (see schema.users). A database created by 0001 at a later version has them
already."""

from __future__ import annotations

from sqlalchemy import Connection

from pypacs.index import schema

VERSION = 6


def upgrade(conn: Connection) -> None:
    for table in (schema.users, schema.api_tokens, schema.sessions):
        table.create(conn, checkfirst=True)
