"""The two UID rules (model/uid.py): liberal for what pypacs accepts, PS3.5 9.1 to the letter
for what it generates."""

from __future__ import annotations

import pytest

from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID
from pypacs.model.uid import is_acceptable_uid, is_conforming_uid


@pytest.mark.parametrize(
    ("value", "acceptable", "conforming"),
    [
        ("1.2.840.10008.1.2.1", True, True),
        ("0", True, True),
        ("1.0.3", True, True),  # a component "0" is no leading zero
        ("1.02.3", True, False),  # PS3.5 9.1: no leading zeros; devices write them anyway
        ("999.999.2.19940822.083000", True, False),
        ("1.2.03.0040.ab-7", True, False),  # letters and a hyphen: URL-safe, not 9.1
        ("1..2", True, False),
        ("1." + "2" * 62, True, True),  # 64 characters, PS3.5 Table 6.2-1
        ("1." + "2" * 63, False, False),  # 65
        ("", False, False),
        ("1.2.3/4", False, False),  # a path separator
        ("1.2.3\x004", False, False),
        ("1.2.3 ", False, False),
    ],
)
def test_rules(value: str, acceptable: bool, conforming: bool) -> None:
    assert is_acceptable_uid(value) is acceptable
    assert is_conforming_uid(value) is conforming


def test_what_pypacs_generates_conforms() -> None:
    # PS3.5 9.1, B.2: the implementation class UID under the 2.25 root.
    assert is_conforming_uid(IMPLEMENTATION_CLASS_UID)
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.")
