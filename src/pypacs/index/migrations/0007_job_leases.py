"""Version 7: jobs taken over between nodes: the ``job.attempts`` column (``claimed_by`` and
``lease_until`` came with version 5) and the ``job_item`` table of the instances a job's
destination confirmed (see schema.job_item). A database created by 0001 at a later version
has them already.

Independent of version 6 (accounts): each step only adds what is missing, so the two apply
in either order.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect

from pypacs.index import schema

VERSION = 7


def upgrade(conn: Connection) -> None:
    columns = {column["name"] for column in inspect(conn).get_columns("job")}
    if "attempts" not in columns:
        conn.exec_driver_sql("ALTER TABLE job ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
    schema.job_item.create(conn, checkfirst=True)
