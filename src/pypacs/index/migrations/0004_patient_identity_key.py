"""Version 4: ``patient.identity_key``, part of the patient's unique identity, so that
studies without a Patient ID each get a patient of their own (see schema.patient).

Patients already merged under an empty Patient ID stay as they are. A database created by
0001 at a later version has the column already.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect

from pypacs.index import schema

VERSION = 4

_OLD_COLUMNS = [c.name for c in schema.patient.columns if c.name != "identity_key"]


def upgrade(conn: Connection) -> None:
    if "identity_key" in {c["name"] for c in inspect(conn).get_columns("patient")}:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "ALTER TABLE patient ADD COLUMN identity_key VARCHAR NOT NULL DEFAULT ''"
        )
        conn.exec_driver_sql("ALTER TABLE patient DROP CONSTRAINT uq_patient_identity")
        conn.exec_driver_sql(
            "ALTER TABLE patient ADD CONSTRAINT uq_patient_identity "
            "UNIQUE (patient_id, issuer_of_patient_id, identity_key)"
        )
        return
    # SQLite changes a table constraint only by making the table anew. Inside the write
    # transaction foreign keys cannot be switched off; deferred, the study rows that lose
    # their patient for a moment count as violations until the same rows are back.
    columns = ", ".join(_OLD_COLUMNS)
    conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    conn.exec_driver_sql(f"CREATE TEMP TABLE patient_copy AS SELECT {columns} FROM patient")
    conn.exec_driver_sql("DROP TABLE patient")
    schema.patient.create(conn)  # with its indexes
    conn.exec_driver_sql(f"INSERT INTO patient ({columns}) SELECT {columns} FROM patient_copy")
    conn.exec_driver_sql("DROP TABLE patient_copy")
