"""Version 1: the level tables, the conflict log and the version table."""

from __future__ import annotations

from sqlalchemy import Connection

from pypacs.index import schema

VERSION = 1


def upgrade(conn: Connection) -> None:
    schema.metadata.create_all(conn)
