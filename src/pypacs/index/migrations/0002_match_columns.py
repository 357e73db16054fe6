"""Version 2: normalised match columns for person names and times, filled from the rows.

``patient_name_ci`` and ``referring_physician_name_ci`` hold the upper-cased alphabetic
group (case-insensitive PN matching); ``study_time_norm`` holds HHMMSS.FFFFFF (time ranges).
Each change checks first, so a database created by 0001 at a later version is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, select, text, update

from pypacs.index import schema
from pypacs.model.vr import normalise_time, pn_match_form

VERSION = 2

_COLUMNS: tuple[tuple[str, str, str, Callable[[str], str]], ...] = (
    ("patient", "patient_name", "patient_name_ci", pn_match_form),
    ("study", "referring_physician_name", "referring_physician_name_ci", pn_match_form),
    ("study", "study_time", "study_time_norm", normalise_time),
)


def upgrade(conn: Connection) -> None:
    for table_name, source, target, form in _COLUMNS:
        existing = {c["name"] for c in inspect(conn).get_columns(table_name)}
        if target in existing:
            continue
        conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {target} VARCHAR"))
        conn.execute(text(f"CREATE INDEX ix_{table_name}_{target} ON {table_name} ({target})"))
        table = schema.metadata.tables[table_name]
        rows = conn.execute(select(table.c.pk, table.c[source]).where(table.c[source].is_not(None)))
        for pk, value in rows.all():
            try:
                normal = form(value)
            except ValueError:
                continue
            conn.execute(update(table).where(table.c.pk == pk).values({target: normal}))
