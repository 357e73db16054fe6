"""Version 3: the ``blob_deletion`` table, where a delete records the blobs it still has to
remove (see index/deletes.py). A database created by 0001 at a later version has it already."""

from __future__ import annotations

from sqlalchemy import Connection

from pypacs.index import schema

VERSION = 3


def upgrade(conn: Connection) -> None:
    schema.blob_deletion.create(conn, checkfirst=True)
