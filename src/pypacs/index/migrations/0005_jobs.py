"""Version 5: the ``job`` table, where the studies sent to peers keep their state (see
schema.job). A database created by 0001 at a later version has it already."""

from __future__ import annotations

from sqlalchemy import Connection

from pypacs.index import schema

VERSION = 5


def upgrade(conn: Connection) -> None:
    schema.job.create(conn, checkfirst=True)
