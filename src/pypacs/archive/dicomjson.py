"""DICOM JSON (PS3.18 F.2) of a header's elements, fast for the common VRs.

pydicom's ``to_json_dict`` is general and correct but costs more than everything else the
ingest path does per instance; the plain string and number VRs, which are most of a
header, are converted here directly, with the same output (a test holds them equal), and
everything else (sequences, binary, AT, odd values) goes to pydicom.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from pypacs.model.attributes import BULK_DATA_THRESHOLD

_STRINGS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_BINARY_NUMBERS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})


def _pn(value: PersonName | str) -> dict[str, str]:
    groups = str(value).split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False) if group}


def element_json(elem: DataElement) -> dict[str, Any]:
    """One element as DICOM JSON.

    Raises:
        Exception: whatever pydicom raises for a value it cannot express.
    """
    vr = elem.VR
    value = elem.value
    empty = value is None or value == "" or (isinstance(value, MultiValue | list) and not value)
    if empty and (vr in _STRINGS or vr == "PN" or vr in _BINARY_NUMBERS):
        return {"vr": vr}
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    if vr in _STRINGS:
        return {"vr": vr, "Value": [str(v) for v in values]}
    if vr == "PN":
        return {"vr": vr, "Value": [_pn(v) if str(v) else None for v in values]}
    if vr in _BINARY_NUMBERS and all(isinstance(v, int | float) for v in values):
        return {"vr": vr, "Value": values}
    return elem.to_json_dict(None, BULK_DATA_THRESHOLD)
