"""The stored attributes of the instances under an entity, for WADO-RS metadata (PS3.18 10.4).

Each level's attribute set is kept as compressed DICOM JSON in the index (see ``ingest``);
an instance's metadata is the four sets of its patient, study, series and itself. The rows
come series by series, so a parent's set is decompressed once and its bytes shared by every
instance below it, and the sets stay JSON text: joining them is left to the front door.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_LEVELS = ("patient", "study", "series", "instance")


@dataclass(frozen=True)
class InstanceAttributes:
    """One instance: its identity, its stored transfer syntax, and the DICOM JSON object
    (UTF-8 text, ``{...}``) of each level, patient first."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    patient: bytes
    study: bytes
    series: bytes
    instance: bytes


def instance_attributes(rows: Iterable[Mapping[Any, Any]]) -> Iterator[InstanceAttributes]:
    """Rows of ``query.to_sql.compile_attributes`` → InstanceAttributes, streamed."""
    last_pk: dict[str, object] = dict.fromkeys(_LEVELS[:3])
    last_text: dict[str, bytes] = dict.fromkeys(_LEVELS[:3], b"{}")
    for row in rows:
        for level in _LEVELS[:3]:
            pk = row[f"{level}_pk"]
            if pk != last_pk[level]:
                last_pk[level] = pk
                last_text[level] = zlib.decompress(row[f"{level}_attrs"])
        yield InstanceAttributes(
            row["study_instance_uid"],
            row["series_instance_uid"],
            row["sop_instance_uid"],
            row["transfer_syntax_uid"],
            last_text["patient"],
            last_text["study"],
            last_text["series"],
            zlib.decompress(row["instance_attrs"]),
        )
