"""Matching cases over the find data set (findfixtures): keys and the entities they match,
written from the set's definitions. Read by the C-FIND tests and, through QIDO-RS, by the
web tests: one matching engine, two front doors."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, CTImageStorage

from findfixtures import ALL_PATIENTS, ALL_STUDIES, INSTANCE_UID, SERIES_UID, STUDY_UID


def item(**keys: str) -> list[Dataset]:
    """A sequence key of one item."""
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return [ds]


def uid_list(*uids: str) -> str:
    return "\\".join(uids)


UNKNOWN_UID = "1.2.826.0.1.3680043.10.1255.7001.99"
EVERY_STUDY_BUT_JOHN2 = tuple(s for s in ALL_STUDIES if s != "john2")


STUDY_CASES = [
    # C.2.2.2.1 single value matching
    pytest.param({"StudyDate": "20240131"}, ("john2", "yam1"), id="single-DA"),
    pytest.param({"AccessionNumber": "A_1%"}, ("john1",), id="single-SH-holding-%_"),
    pytest.param({"PatientID": "50%_OFF"}, ("pct1",), id="single-LO-holding-%_"),
    pytest.param({"PatientName": "smith^john"}, ("john1", "john2"), id="single-PN-any-case"),
    pytest.param({"PatientName": "Smith"}, (), id="single-PN-is-not-a-prefix"),
    pytest.param({"StudyDescription": "chest ct"}, (), id="single-LO-case-sensitive"),
    pytest.param(
        {"ModalitiesInStudy": "MR"}, ("john1", "jane1", "bob1", "non1"), id="single-CS-MR"
    ),
    pytest.param({"ModalitiesInStudy": "SR"}, ("john1",), id="single-CS-SR-in-CT-MR-SR"),
    pytest.param(
        {"ModalitiesInStudy": "CT\\SR"},
        ("john1", "john2", "jane2", "pct1", "dec1", "und1", "mue1", "yam1"),
        id="modalities-any-of-two",
    ),
    pytest.param({"PatientAge": "063Y"}, ("john1",), id="single-AS-no-column"),
    # C.2.2.2.2 list of UID matching
    pytest.param(
        {"StudyInstanceUID": uid_list(STUDY_UID["john1"], STUDY_UID["jane2"], UNKNOWN_UID)},
        ("john1", "jane2"),
        id="uid-list",
    ),
    pytest.param({"StudyInstanceUID": STUDY_UID["mue1"]}, ("mue1",), id="uid-single"),
    # An empty value is not a UID: it must not turn the list into universal matching.
    pytest.param(
        {"StudyInstanceUID": STUDY_UID["mue1"] + "\\"}, ("mue1",), id="uid-list-empty-value"
    ),
    # C.2.2.2.3 universal matching; a lone "*" is universal too (C.2.2.2.4)
    pytest.param({"StudyDescription": ""}, ALL_STUDIES, id="universal-empty"),
    pytest.param({"ReferringPhysicianName": "*"}, ALL_STUDIES, id="universal-star"),
    pytest.param({"StudyDescription": "?*"}, EVERY_STUDY_BUT_JOHN2, id="wildcard-needs-a-value"),
    # C.2.2.2.4 wildcard matching
    pytest.param(
        {"PatientName": "SMI*"},
        ("john1", "john2", "jane1", "jane2", "bob1"),
        id="wildcard-PN-prefix",
    ),
    pytest.param({"PatientName": "smith^j?hn"}, ("john1", "john2"), id="wildcard-PN-?"),
    pytest.param(
        {"PatientName": "*^J*"},
        ("john1", "john2", "jane1", "jane2", "mue1", "non1"),
        id="wildcard-PN-given-name",
    ),
    pytest.param({"PatientName": "müller^jürgen"}, ("mue1",), id="single-PN-non-ascii-case"),
    pytest.param({"PatientName": "ñoño*"}, ("non1",), id="wildcard-PN-non-ascii-case"),
    pytest.param({"PatientName": "Yamada*"}, ("yam1",), id="wildcard-PN-three-groups"),
    pytest.param(
        {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"},
        ("yam1",),
        id="single-PN-three-groups",
    ),
    pytest.param({"StudyDescription": "Chest*"}, ("john1",), id="wildcard-LO-case-1"),
    pytest.param({"StudyDescription": "chest*"}, ("jane2",), id="wildcard-LO-case-2"),
    pytest.param({"StudyDescription": "*CT"}, ("john1", "jane2"), id="wildcard-LO-suffix"),
    pytest.param({"StudyDescription": "Sch?del"}, ("mue1",), id="wildcard-?-one-character"),
    pytest.param({"StudyDescription": "T?rax"}, ("non1",), id="wildcard-?-one-utf8-character"),
    pytest.param({"PatientID": "50%*"}, ("pct1", "und1"), id="wildcard-%-literal"),
    pytest.param({"PatientID": "50%_*"}, ("pct1",), id="wildcard-%_-literal"),
    pytest.param({"PatientID": "50?_OFF"}, ("pct1", "dec1"), id="wildcard-?-then-_-literal"),
    pytest.param({"PatientID": "50%?OFF"}, ("pct1", "und1"), id="wildcard-%-then-?"),
    pytest.param({"AccessionNumber": "A_1*"}, ("john1", "jane1"), id="wildcard-SH-_-literal"),
    pytest.param({"AccessionNumber": "A?1%"}, ("john1", "john2"), id="wildcard-SH-%-literal"),
    pytest.param({"ReferringPhysicianName": "r?e^REF"}, ("jane1",), id="wildcard-PN-study"),
    pytest.param(
        {"ReferringPhysicianName": "Doe*"},
        tuple(s for s in ALL_STUDIES if s not in ("john2", "jane1")),
        id="wildcard-PN-absent-value-no-match",
    ),
    pytest.param(
        {"ModalitiesInStudy": "M*"}, ("john1", "jane1", "bob1", "non1"), id="wildcard-modalities"
    ),
    pytest.param(
        {"AdmittingDiagnosesDescription": "*fracture*"}, ("mue1",), id="wildcard-no-column-case"
    ),
    pytest.param(
        {"AdmittingDiagnosesDescription": "*racture*"}, ("john1", "mue1"), id="wildcard-no-column"
    ),
    pytest.param({"PatientComments": "*tea*"}, ("john1", "john2"), id="wildcard-LT-patient"),
    # C.2.2.2.5 range matching
    pytest.param(
        {"StudyDate": "20240101-20240131"},
        ("john1", "john2", "pct1", "dec1", "und1", "mue1", "non1", "yam1"),
        id="range-DA-closed",
    ),
    pytest.param(
        {"StudyDate": "-20240131"},
        ("bob1", "john1", "john2", "pct1", "dec1", "und1", "mue1", "non1", "yam1"),
        id="range-DA-open-low",
    ),
    pytest.param({"StudyDate": "20240201-"}, ("jane1", "jane2"), id="range-DA-open-high"),
    pytest.param({"StudyDate": "20240131-20240131"}, ("john2", "yam1"), id="range-DA-one-day"),
    pytest.param(
        {"StudyDate": "20240131-20240201"}, ("john2", "yam1", "jane1"), id="range-DA-two-days"
    ),
    pytest.param(
        {"StudyTime": "101500.25-101500.25"}, ("jane1", "yam1"), id="range-TM-one-instant"
    ),
    pytest.param(
        {"StudyTime": "-101500.200000"},
        ("john1", "jane2", "pct1", "mue1"),
        id="range-TM-fraction-high",
    ),
    pytest.param({"StudyTime": "235959.999999-"}, ("john2",), id="range-TM-last-microsecond"),
    pytest.param({"StudyTime": "2359-"}, ("john2", "bob1"), id="range-TM-minutes"),
    pytest.param(
        {"StudyTime": "101500.25-235959.999999"},
        ("john2", "jane1", "bob1", "dec1", "und1", "non1", "yam1"),
        id="range-TM-closed",
    ),
    pytest.param(
        {"PatientBirthDate": "-19651231"},
        ("john1", "john2", "jane1", "jane2", "bob1"),
        id="range-DA-patient",
    ),
    # C.2.2.2.6 sequence matching
    pytest.param(
        {"ProcedureCodeSequence": item(CodeValue="HEAD01")}, ("jane1", "mue1"), id="seq-one-key"
    ),
    pytest.param(
        {"ProcedureCodeSequence": item(CodeValue="HEAD01", CodingSchemeDesignator="99TEST")},
        ("jane1",),
        id="seq-two-keys-one-item",
    ),
    pytest.param(
        {"ProcedureCodeSequence": item(CodeValue="ABD02")}, ("john1",), id="seq-second-item"
    ),
    pytest.param(
        {"ProcedureCodeSequence": item(CodeValue="ABD02", CodingSchemeDesignator="99OTHER")},
        (),
        id="seq-keys-of-different-items",
    ),
    pytest.param(
        {"ProcedureCodeSequence": item(CodeValue="*01")},
        ("john1", "jane1", "mue1"),
        id="seq-wildcard",
    ),
    pytest.param({"ProcedureCodeSequence": []}, ALL_STUDIES, id="seq-universal"),
    # several keys: all must match
    pytest.param(
        {"PatientName": "SMI*", "StudyDate": "20240201-"}, ("jane1", "jane2"), id="two-keys"
    ),
    pytest.param(
        {"ModalitiesInStudy": "CT", "StudyDate": "-20240110", "PatientSex": "M"},
        ("john1", "mue1"),
        id="three-keys",
    ),
]


PATIENT_CASES = [
    pytest.param({"PatientID": ""}, ALL_PATIENTS, id="universal"),
    pytest.param({"PatientID": "50%_OFF"}, ("50%_OFF",), id="single-holding-%_"),
    pytest.param({"PatientID": "50%*"}, ("50%_OFF", "50%XOFF"), id="wildcard-%-literal"),
    pytest.param({"PatientID": "*_OFF"}, ("50%_OFF", "50X_OFF"), id="wildcard-_-literal"),
    pytest.param({"PatientName": "SMI*"}, ("PAT-JOHN", "PAT-JANE", "PAT-BOB"), id="wildcard-PN"),
    pytest.param({"PatientName": "smith^j?hn"}, ("PAT-JOHN",), id="wildcard-PN-?"),
    pytest.param({"PatientName": "Müller*"}, ("PAT-MUELLER",), id="wildcard-PN-latin1"),
    pytest.param(
        {"PatientBirthDate": "19600101-19651231"},
        ("PAT-JOHN", "PAT-JANE", "PAT-BOB"),
        id="range-DA-closed-bounds",
    ),
    pytest.param({"PatientBirthDate": "19651231-"}, ALL_PATIENTS[2:], id="range-DA-open-high"),
    pytest.param({"PatientSex": "F"}, ("PAT-JANE", "50%_OFF"), id="single-CS"),
    pytest.param({"PatientComments": "Likes*"}, ("PAT-JANE",), id="wildcard-LT-no-column"),
]


PATIENT_STUDY_CASES = [
    pytest.param({}, ("john1", "john2"), id="universal"),
    pytest.param({"StudyDate": "20240102-"}, ("john2",), id="range-DA"),
    pytest.param({"StudyTime": "-000000"}, ("john1",), id="range-TM-midnight"),
    pytest.param({"ModalitiesInStudy": "MR"}, ("john1",), id="modalities"),
    pytest.param(
        {"StudyInstanceUID": uid_list(STUDY_UID["john1"], STUDY_UID["jane1"])},
        ("john1",),
        id="uid-list-other-patient-left-out",
    ),
    pytest.param({"AccessionNumber": "A?1%"}, ("john1", "john2"), id="wildcard"),
    pytest.param({"StudyDescription": "Chest CT"}, ("john1",), id="single"),
    pytest.param({"ProcedureCodeSequence": item(CodeValue="CHEST01")}, ("john1",), id="sequence"),
    pytest.param({"PatientAge": "064Y"}, ("john2",), id="no-column"),
]


SERIES_CASES = [
    pytest.param({"Modality": ""}, ("john1/1", "john1/2", "john1/3"), id="universal"),
    pytest.param({"Modality": "MR"}, ("john1/2",), id="single-CS"),
    pytest.param({"Modality": "?R"}, ("john1/2", "john1/3"), id="wildcard-CS"),
    pytest.param(
        {"SeriesInstanceUID": uid_list(SERIES_UID["john1/1"], SERIES_UID["john1/3"])},
        ("john1/1", "john1/3"),
        id="uid-list",
    ),
    pytest.param(
        {"SeriesInstanceUID": uid_list(SERIES_UID["john1/2"], SERIES_UID["jane1/1"])},
        ("john1/2",),
        id="uid-list-other-study-left-out",
    ),
    pytest.param({"SeriesDescription": "sag*"}, ("john1/2",), id="wildcard-LO"),
    pytest.param({"SeriesDescription": "SAG*"}, (), id="wildcard-LO-case-sensitive"),
    pytest.param({"SeriesNumber": "3"}, ("john1/3",), id="single-IS"),
    pytest.param({"SeriesDate": "20240102-"}, ("john1/2", "john1/3"), id="range-DA-no-column"),
    pytest.param(
        {"SeriesTime": "101500.25-101500.25"}, ("john1/2",), id="range-TM-fraction-no-column"
    ),
    pytest.param({"SeriesTime": "235959.999999-"}, ("john1/3",), id="range-TM-last-microsecond"),
]


CT_INSTANCES = ("john1/1/1", "john1/1/2", "john1/1/3")

IMAGE_CASES = [
    pytest.param({}, CT_INSTANCES, id="universal"),
    pytest.param({"InstanceNumber": "2"}, ("john1/1/2",), id="single-IS"),
    # IS values are numbers (PS3.5 6.2): "02" is 2, on the indexed column as over attributes.
    pytest.param({"InstanceNumber": "02"}, ("john1/1/2",), id="single-IS-leading-zero"),
    pytest.param({"AcquisitionNumber": "02"}, ("john1/1/2",), id="single-IS-no-column"),
    pytest.param(
        {"SOPInstanceUID": uid_list(INSTANCE_UID["john1/1/1"], INSTANCE_UID["john1/1/3"])},
        ("john1/1/1", "john1/1/3"),
        id="uid-list",
    ),
    pytest.param({"SOPClassUID": CTImageStorage}, CT_INSTANCES, id="single-UI"),
    pytest.param({"SOPClassUID": BasicTextSRStorage}, (), id="single-UI-none"),
    pytest.param({"ContentDate": "20240102-"}, ("john1/1/2", "john1/1/3"), id="range-no-column"),
    pytest.param({"ContentDate": "-20240101"}, ("john1/1/1",), id="range-open-low-no-column"),
    pytest.param({"ImageComments": "slice 2*"}, ("john1/1/2",), id="wildcard-no-column"),
    pytest.param({"ImageComments": "SLICE*"}, (), id="wildcard-case-sensitive-no-column"),
]


DATE_TIME_CASES = [
    # [2024-01-01 12:00, 2024-01-31 end] as one range, or dates and times apart.
    pytest.param(
        {"StudyDate": "20240101-20240131", "StudyTime": "120000-"},
        ("john2", "pct1", "dec1", "und1", "mue1", "non1", "yam1"),
        ("john2", "dec1", "und1", "non1"),
        id="open-high-time",
    ),
    # [2024-01-10 00:00, 2024-01-15 12:00] as one range, or dates and times apart.
    pytest.param(
        {"StudyDate": "20240110-20240115", "StudyTime": "-120000"},
        ("mue1", "non1", "pct1", "dec1"),
        ("mue1", "pct1", "dec1"),
        id="open-low-time",
    ),
]
