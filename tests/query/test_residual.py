"""query/residual: each Match kind decided in Python over stored DICOM JSON elements."""

from __future__ import annotations

from typing import Any

from pypacs.model.levels import Level
from pypacs.query.residual import combined_matches, item_matches, matches, stored_values
from pypacs.query.types import CombinedDateTime, Exact, Match, Pattern, Range, Term

AGE, COMMENTS, DATE, TIME, DATETIME = 0x00101010, 0x00104000, 0x00080021, 0x00080031, 0x0008002A
NAME, NUMBER, CODE_VALUE, CODES = 0x00100010, 0x00200012, 0x00080100, 0x00081032


def key(tag: int, vr: str, *terms: Term, ci: bool = False) -> Match:
    return Match(tag, vr, Level.STUDY, terms, case_insensitive=ci)


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def person(alphabetic: str, ideographic: str = "", phonetic: str = "") -> dict[str, Any]:
    groups = {"Alphabetic": alphabetic, "Ideographic": ideographic, "Phonetic": phonetic}
    return element("PN", {k: v for k, v in groups.items() if v})


def test_universal_matches_present_absent_and_empty() -> None:
    universal = key(AGE, "AS")
    assert matches(universal, element("AS", "030Y"))
    assert matches(universal, element("AS"))
    assert matches(universal, None)


def test_nothing_matches_nothing() -> None:
    assert not matches(Match(AGE, "AS", Level.STUDY, nothing=True), element("AS", "030Y"))


def test_single_value_is_exact_and_case_sensitive() -> None:
    assert matches(key(AGE, "AS", Exact("030Y")), element("AS", "030Y"))
    assert not matches(key(AGE, "AS", Exact("030Y")), element("AS", "031Y"))
    assert not matches(key(COMMENTS, "LT", Exact("likes tea")), element("LT", "Likes tea"))


def test_an_absent_or_empty_value_matches_no_value() -> None:
    assert not matches(key(AGE, "AS", Exact("030Y")), None)
    assert not matches(key(AGE, "AS", Exact("030Y")), element("AS"))


def test_padding_is_insignificant() -> None:
    # PS3.5 6.2: trailing spaces of CS/LO are padding; leading spaces of LT are not.
    assert matches(key(0x00080060, "CS", Exact("CT")), element("CS", "CT "))
    assert not matches(key(COMMENTS, "LT", Exact("tea")), element("LT", " tea"))


def test_numbers_compare_as_numbers() -> None:
    assert matches(key(NUMBER, "IS", Exact("02")), element("IS", 2))
    assert not matches(key(NUMBER, "IS", Exact("3")), element("IS", 2))


def test_wildcards() -> None:
    comments = element("LT", "50%_off, likes tea")
    assert matches(key(COMMENTS, "LT", Pattern("50%_*")), comments)
    assert matches(key(COMMENTS, "LT", Pattern("5?%_off*tea")), comments)
    assert not matches(key(COMMENTS, "LT", Pattern("50%X*")), comments)
    # Regular-expression characters are literal.
    assert not matches(key(COMMENTS, "LT", Pattern("5.*")), comments)
    assert not matches(key(COMMENTS, "LT", Pattern("LIKES*")), element("LT", "likes"))


def test_several_values_any_against_any() -> None:
    # PS3.4 C.2.2.2.8: any query value against any stored value.
    types = key(0x00080008, "CS", Exact("DERIVED"), Exact("AXIAL"))
    assert matches(types, element("CS", "ORIGINAL", "PRIMARY", "AXIAL"))
    assert not matches(types, element("CS", "ORIGINAL", "PRIMARY"))


def test_date_ranges_closed_and_open() -> None:
    stored = element("DA", "20240115")
    assert matches(key(DATE, "DA", Range("20240115", "20240115")), stored)
    assert matches(key(DATE, "DA", Range("20240101", None)), stored)
    assert matches(key(DATE, "DA", Range(None, "20240115")), stored)
    assert not matches(key(DATE, "DA", Range("20240116", None)), stored)
    assert not matches(key(DATE, "DA", Range("20240101", "20240114")), stored)
    assert not matches(key(DATE, "DA", Range("20240101", None)), element("DA"))


def test_time_ranges_compare_normalised_times() -> None:
    # Stored "1015" is 10:15:00.000000; bounds come normalised from the parsers.
    stored = element("TM", "1015")
    assert matches(key(TIME, "TM", Range("101500.000000", "101500.000000")), stored)
    assert not matches(key(TIME, "TM", Range("101500.000001", None)), stored)
    last = element("TM", "235959.999999")
    assert matches(key(TIME, "TM", Range("235959.999999", None)), last)
    assert not matches(key(TIME, "TM", Range("10", None)), element("TM", "not a time"))


def test_date_time_ranges() -> None:
    stored = element("DT", "20240131101500.25+0100")
    assert matches(key(DATETIME, "DT", Range("20240131101500.250000", None)), stored)
    assert not matches(key(DATETIME, "DT", Range(None, "20240131101500.249999")), stored)


def test_combined_date_and_time() -> None:
    # PS3.4 C.2.2.2.5.1: date and time read as one moment; no time is midnight.
    noon_on = CombinedDateTime(0x00080020, 0x00080030, "20240131120000.000000", None)
    assert combined_matches(noon_on, "20240131", "235959.999999")
    assert not combined_matches(noon_on, "20240131", "1159")
    assert combined_matches(noon_on, "20240201", None)
    assert not combined_matches(noon_on, None, "235959")
    assert not combined_matches(noon_on, "20240201", "not a time")


def test_person_name_case_option() -> None:
    name = person("Smith^John")
    assert not matches(key(NAME, "PN", Exact("SMITH^JOHN")), name)
    assert matches(key(NAME, "PN", Exact("SMITH^JOHN"), ci=True), name)
    assert matches(key(NAME, "PN", Pattern("smi*"), ci=True), name)
    assert not matches(key(NAME, "PN", Pattern("smi*")), name)


def test_person_name_trailing_separators_are_insignificant() -> None:
    assert matches(key(NAME, "PN", Exact("Smith^John^^")), person("Smith^John"))


def test_person_name_component_groups() -> None:
    # PS3.5 6.2.1: each group given in the key must match the stored group.
    name = person("Yamada^Tarou", "山田^太郎", "やまだ^たろう")
    assert matches(key(NAME, "PN", Exact("Yamada^Tarou")), name)
    assert matches(key(NAME, "PN", Exact("=山田^太郎")), name)
    assert matches(key(NAME, "PN", Pattern("Yamada*=山田*")), name)
    assert not matches(key(NAME, "PN", Exact("Yamada^Tarou=山田^次郎")), name)
    assert not matches(key(NAME, "PN", Exact("==やまだ")), name)


def test_stored_values_in_matching_form() -> None:
    assert stored_values(person("Yamada^Tarou", "山田^太郎")) == ["Yamada^Tarou=山田^太郎"]
    assert stored_values(element("CS", "CT ", "", "MR")) == ["CT", "MR"]
    assert stored_values(element("IS", 2)) == ["2"]
    assert stored_values(None) == []


def code(value: str, scheme: str) -> dict[str, Any]:
    return {
        f"{CODE_VALUE:08X}": element("SH", value),
        "00080102": element("SH", scheme),
    }


def test_sequence_matching_needs_one_item_to_match_every_key() -> None:
    # PS3.4 C.2.2.2.6.
    stored = element("SQ", code("CHEST01", "99TEST"), code("HEAD01", "99OTHER"))
    value_is = Match(CODE_VALUE, "SH", Level.STUDY, (Exact("HEAD01"),))
    scheme_is = Match(0x00080102, "SH", Level.STUDY, (Exact("99TEST"),))
    assert matches(Match(CODES, "SQ", Level.STUDY, items=(value_is,)), stored)
    assert not matches(Match(CODES, "SQ", Level.STUDY, items=(value_is, scheme_is)), stored)
    assert not matches(Match(CODES, "SQ", Level.STUDY, items=(value_is,)), element("SQ"))
    assert item_matches(code("HEAD01", "99TEST"), (value_is, scheme_is))
