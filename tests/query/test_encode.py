"""query/encode: a matched row → the response identifier's bytes, equal byte for byte to what
pydicom writes for respond.build_identifier's Dataset, in implicit and explicit VR little
endian (PS3.5 A.1, A.2), for the find data set and for generated values of every key VR."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pypacs.archive import Archive
from pypacs.archive.ingest import configure_pydicom
from pypacs.config import defaults
from pypacs.model.keys import KEYS, Key
from pypacs.model.levels import InformationModel, Level
from pypacs.query.encode import IdentifierEncoder
from pypacs.query.from_dimse import parse_identifier
from pypacs.query.respond import ResponseContext, Row, build_identifier
from pypacs.query.to_sql import Compiled, compile_query, label
from pypacs.query.types import Query, QueryOptions

from dicomgen import write_dataset as write_file
from findfixtures import fixture_datasets, identifier

CONTEXT = ResponseContext(ae_title="ARCHIVE1")
SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
PATIENT_ROOT, STUDY_ROOT = InformationModel.PATIENT_ROOT, InformationModel.STUDY_ROOT


def pydicom_bytes(ds: Dataset, syntax: str) -> bytes:
    """What pydicom writes for ``ds`` as a data set in ``syntax`` (little endian)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


@pytest.fixture(scope="module")
def find_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """An in-process archive (SQLite) holding the find data set."""
    configure_pydicom()
    root: Path = tmp_path_factory.mktemp("encode")
    # The defaults' options, whatever fields they hold, on a folder of this module's own.
    options = replace(
        defaults().archive_options(),
        database_url=f"sqlite:///{root / 'index.sqlite'}",
        blob_root=str(root / "blobs"),
        reserve_path="",
        reserve_bytes=0,
        fsync=False,
    )
    arc = Archive.open(options)
    folder = root / "in"
    folder.mkdir()
    for ds in fixture_datasets():
        arc.store_file(write_file(ds, folder))
    yield arc
    arc.close()


def keywords_at(*levels: Level) -> dict[str, object]:
    return {key.keyword: "" for key in KEYS if key.level in levels}


# Keys without a column (kept in each level's attribute set), and one nobody stored.
STORED_STUDY = {"PatientAge": "", "AdmittingDiagnosesDescription": "", "PatientWeight": ""}
STORED_PATIENT = {"PatientComments": "", "OtherPatientIDs": ""}

P, S, SE, IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
CASES: list[tuple[str, InformationModel, dict[str, object], str | None]] = [
    ("PATIENT", PATIENT_ROOT, keywords_at(P), None),
    ("PATIENT", PATIENT_ROOT, {**keywords_at(P), **STORED_PATIENT}, None),
    ("STUDY", STUDY_ROOT, keywords_at(P, S), None),
    ("STUDY", STUDY_ROOT, {**keywords_at(P, S), **STORED_STUDY}, None),
    ("STUDY", STUDY_ROOT, {**keywords_at(P, S), "ProcedureCodeSequence": []}, None),
    (
        "STUDY",
        STUDY_ROOT,
        {**keywords_at(S), "RetrieveAETitle": "", "InstanceAvailability": ""},
        None,
    ),
    ("STUDY", STUDY_ROOT, {**keywords_at(P, S), **STORED_STUDY}, "ISO_IR 100"),
    ("STUDY", STUDY_ROOT, {**keywords_at(P, S), **STORED_STUDY}, "ISO_IR 192"),
    ("STUDY", STUDY_ROOT, keywords_at(P, S), "\\ISO 2022 IR 87"),
    (
        "STUDY",
        STUDY_ROOT,
        {"PatientName": "", "StudyDescription": ""},
        "ISO 2022 IR 6\\ISO 2022 IR 87",
    ),
    ("STUDY", STUDY_ROOT, {"PatientName": "Yamada*", "StudyDescription": ""}, "\\ISO 2022 IR 87"),
    ("STUDY", STUDY_ROOT, {**keywords_at(S), "PatientName": "Müller*"}, "ISO_IR 100"),
    # Keys of a level below the query's come back empty (PS3.4 C.4.1.1.3.2).
    ("STUDY", STUDY_ROOT, {**keywords_at(S), "Modality": "", "SOPInstanceUID": ""}, None),
    ("SERIES", STUDY_ROOT, {**keywords_at(S, SE), "SeriesDate": "", "ImageType": ""}, None),
    ("IMAGE", STUDY_ROOT, {**keywords_at(S, SE, IM), "Rows": "", "ImageType": ""}, None),
    ("IMAGE", PATIENT_ROOT, {**keywords_at(P, S, SE, IM), **STORED_STUDY}, "ISO_IR 192"),
]


def parsed(level: str, model: InformationModel, keys: dict[str, object], cs: str | None) -> Query:
    return parse_identifier(
        identifier(keys, level, charset=cs), model, QueryOptions(relational=True)
    )


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_find_set_encodes_as_pydicom_writes_it(
    find_set: Archive, case: int, syntax: str
) -> None:
    query = parsed(*CASES[case])
    expected = [pydicom_bytes(ds, syntax) for ds in find_set.find(query, CONTEXT)]
    got = list(find_set.find_encoded(query, CONTEXT, syntax))
    assert expected  # every case matches something
    assert got == expected


def test_the_residual_path_encodes_the_same(find_set: Archive) -> None:
    query = parsed("STUDY", STUDY_ROOT, {**keywords_at(P, S), **STORED_STUDY}, None)
    expected = [pydicom_bytes(ds, ExplicitVRLittleEndian) for ds in find_set.find(query, CONTEXT)]
    got = find_set.find_encoded(query, CONTEXT, ExplicitVRLittleEndian, sql_matching=False)
    assert list(got) == expected


def test_a_sequence_key_with_an_item_returns_the_matching_items_only(find_set: Archive) -> None:
    item = Dataset()
    item.CodeValue = "HEAD01"
    item.CodingSchemeDesignator = ""
    keys: dict[str, object] = {"StudyInstanceUID": "", "ProcedureCodeSequence": [item]}
    query = parsed("STUDY", STUDY_ROOT, keys, None)
    encoded = list(find_set.find_encoded(query, CONTEXT, ExplicitVRLittleEndian))
    assert encoded == [
        pydicom_bytes(ds, ExplicitVRLittleEndian) for ds in find_set.find(query, CONTEXT)
    ]
    ds = read_dataset(BytesIO(encoded[0]), is_implicit_VR=False, is_little_endian=True)
    assert [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.ProcedureCodeSequence] == [
        ("HEAD01", "99TEST")
    ]


def test_japanese_names_keep_their_iso_2022_escapes(find_set: Archive) -> None:
    query = parsed(*CASES[10])
    (encoded,) = find_set.find_encoded(query, CONTEXT, ImplicitVRLittleEndian)
    assert b"\x1b$B" in encoded  # ESC $ B: JIS X 0208 (PS3.5 6.1.2.5.3)
    ds = read_dataset(BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert str(ds.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_a_header_by_hand() -> None:
    """PS3.5 7.1.2: (0008,0052) CS, 2-byte length; (0020,000D) UI padded with NUL."""
    query = Query(Level.STUDY, STUDY_ROOT, (), return_tags=((0x0020000D, Level.STUDY),))
    compiled = compile_query(query)
    row = Row(compiled, {label(Level.STUDY, "study_instance_uid"): "1.2.3"})
    explicit = IdentifierEncoder(query, CONTEXT, ExplicitVRLittleEndian)(compiled, row)
    assert explicit == (
        b"\x08\x00\x52\x00CS\x06\x00STUDY " + b"\x20\x00\x0d\x00UI\x06\x001.2.3\x00"
    )
    implicit = IdentifierEncoder(query, CONTEXT, ImplicitVRLittleEndian)(compiled, row)
    assert implicit == (
        b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " + b"\x20\x00\x0d\x00\x06\x00\x00\x001.2.3\x00"
    )


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_syntaxes_go_through_pydicom(find_set: Archive, syntax: str) -> None:
    query = parsed(*CASES[3])
    got = list(find_set.find_encoded(query, CONTEXT, syntax))
    explicit = [pydicom_bytes(ds, ExplicitVRLittleEndian) for ds in find_set.find(query, CONTEXT)]
    if syntax == DeflatedExplicitVRLittleEndian:
        assert [zlib.decompress(g, -zlib.MAX_WBITS) for g in got] == explicit
    else:
        assert len(got) == len(explicit)
        assert all(a != b and len(a) == len(b) for a, b in zip(got, explicit, strict=True))


def test_a_uid_that_is_no_transfer_syntax_is_refused() -> None:
    query = Query(Level.STUDY, STUDY_ROOT, ())
    with pytest.raises(ValueError, match="not a transfer syntax"):
        IdentifierEncoder(query, CONTEXT, "1.2.840.10008.5.1.4.1.2.2.1")


# -- generated values ------------------------------------------------------------------------

_ASCII_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_LATIN = st.sampled_from("äöüßéñÇ")
_JAPANESE = st.sampled_from("山田太郎やまだたろう")
_ANY_TEXT = st.text(
    st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0x7E), _LATIN, _JAPANESE),
    max_size=12,
)
_CHARSETS = st.sampled_from(
    [
        (),
        ("ISO_IR 100",),
        ("ISO_IR 192",),
        ("", "ISO 2022 IR 87"),
        ("ISO 2022 IR 6", "ISO 2022 IR 87"),
        ("ISO_IR 100", "ISO 2022 IR 87"),
    ]
)


def _ascii_values(draw: st.DrawFn, alphabet: st.SearchStrategy[str]) -> str:
    values = draw(st.lists(st.text(alphabet, max_size=10), min_size=0, max_size=3))
    return "\\".join(values)


@st.composite
def column_value(draw: st.DrawFn, key: Key) -> object:
    """A value as an index column holds it, for ``key``'s VR."""
    if draw(st.integers(0, 6)) == 0:
        return draw(st.sampled_from([None, ""]))
    if key.vr == "IS":
        return draw(st.one_of(st.integers(-(2**31), 2**31 - 1), st.from_regex(r"\A[0-9]{1,6}\Z")))
    if key.vr == "PN":
        groups = draw(st.lists(_ANY_TEXT, min_size=1, max_size=3))
        return "=".join(groups)
    if key.vr in ("LO", "SH"):
        return draw(_ANY_TEXT.filter(lambda t: "\\" not in t)) + (
            "\\" + draw(_ANY_TEXT) if draw(st.booleans()) else ""
        )
    if key.vr == "UI":
        return _ascii_values(draw, st.sampled_from("0123456789. "))
    return draw(_ASCII_TEXT)


@st.composite
def json_element(draw: st.DrawFn, vr: str) -> dict[str, Any]:
    """A stored attribute as DICOM JSON (PS3.18 F.2), as pydicom's to_json gives it."""
    if draw(st.integers(0, 6)) == 0:
        return {"vr": vr}
    if vr == "PN":
        names = draw(
            st.lists(
                st.one_of(
                    st.none(),
                    st.dictionaries(
                        st.sampled_from(["Alphabetic", "Ideographic", "Phonetic"]), _ANY_TEXT
                    ),
                ),
                min_size=1,
                max_size=2,
            )
        )
        return {"vr": vr, "Value": names}
    if vr == "IS":
        return {"vr": vr, "Value": draw(st.lists(st.integers(-(10**9), 10**9), min_size=1))}
    if vr == "DS":
        numbers = st.one_of(
            st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)
        )
        return {"vr": vr, "Value": draw(st.lists(numbers, min_size=1, max_size=3))}
    if vr == "SQ":
        item = st.fixed_dictionaries(
            {"00080100": json_element("SH"), "00080104": json_element("LO")},
            optional={"00080102": json_element("SH"), "00081190": json_element("UR")},
        )
        return {"vr": vr, "Value": draw(st.lists(item, max_size=3))}
    text = _ANY_TEXT if vr in ("LO", "SH", "ST", "LT", "UT", "UC") else _ASCII_TEXT
    values = draw(st.lists(st.one_of(text, st.none()), min_size=1, max_size=3))
    return {"vr": vr, "Value": values}


# One key per VR the key table uses, plus the VRs of stored attributes people ask for.
STORED_KEYS: dict[str, tuple[int, str]] = {
    "PatientAge": (0x00101010, "AS"),
    "PatientWeight": (0x00101030, "DS"),
    "AdmittingDiagnosesDescription": (0x00081080, "LO"),
    "ProcedureCodeSequence": (0x00081032, "SQ"),
    "AdditionalPatientHistory": (0x001021B0, "LT"),
    "StudyComments": (0x00324000, "LT"),
    "NameOfPhysiciansReadingStudy": (0x00081060, "PN"),
    "OtherStudyNumbers": (0x00201070, "IS"),
}
STUDY_COLUMN_KEYS = [k for k in KEYS if k.level in (Level.PATIENT, Level.STUDY)]


@st.composite
def study_rows(draw: st.DrawFn) -> tuple[Query, Compiled, Row]:
    """A STUDY-level query over a random choice of keys and a row of generated values."""
    keys = draw(st.lists(st.sampled_from(STUDY_COLUMN_KEYS), min_size=1, unique=True))
    stored = draw(st.lists(st.sampled_from(sorted(STORED_KEYS)), unique=True))
    tags = [(k.tag, k.level) for k in keys] + [(STORED_KEYS[s][0], Level.STUDY) for s in stored]
    query = Query(
        Level.STUDY,
        STUDY_ROOT,
        (),
        return_tags=tuple(tags),
        charset=draw(_CHARSETS),
    )
    compiled = compile_query(query)
    mapping: dict[str, Any] = {}
    for key in keys:
        mapping[label(key.level, str(key.column))] = draw(column_value(key))
    attrs = {f"{STORED_KEYS[s][0]:08X}": draw(json_element(STORED_KEYS[s][1])) for s in stored}
    if Level.STUDY in compiled.attrs:
        # Column keys of the study level are then read from the attribute set too.
        for key in keys:
            if key.level is Level.STUDY and not key.derived and draw(st.booleans()):
                attrs[f"{key.tag:08X}"] = draw(json_element(key.vr))
        mapping[label(Level.STUDY, "attrs")] = zlib.compress(json.dumps(attrs).encode())
    return query, compiled, Row(compiled, mapping)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study_rows(), st.sampled_from(SYNTAXES))
def test_generated_rows_encode_as_pydicom_writes_them(
    generated: tuple[Query, Compiled, Row], syntax: str
) -> None:
    configure_pydicom()
    query, compiled, row = generated
    expected = pydicom_bytes(build_identifier(query, compiled, row, CONTEXT), syntax)
    assert IdentifierEncoder(query, CONTEXT, syntax)(compiled, row) == expected


ODD_ATTRS: dict[str, dict[str, Any]] = {
    "00280010": {"vr": "US", "Value": [512]},  # Rows: binary number
    "00181050": {"vr": "DS", "Value": [0.5, 2]},  # SpatialResolution: JSON numbers
    "00091010": {"vr": "OB", "InlineBinary": "AAEC"},  # private, inline binary
    "00200032": {"vr": "DS", "Value": ["1.50", None]},  # a missing value among several
    "001021B0": {"vr": "LT", "Value": ["one", "two"]},  # several values of a one-value VR
    "00081032": {  # an item with its own character set
        "vr": "SQ",
        "Value": [
            {
                "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
                "00080104": {"vr": "LO", "Value": ["Schädel"]},
            }
        ],
    },
    "00101002": {"vr": "SQ", "Value": [{}, {"00100020": {"vr": "LO", "Value": ["X"]}}]},
    "00209165": {"vr": "AT", "Value": ["00100020"]},
}


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("charset", [(), ("ISO_IR 100",), ("", "ISO 2022 IR 87")])
def test_values_the_fast_path_leaves_to_pydicom(syntax: str, charset: tuple[str, ...]) -> None:
    configure_pydicom()
    tags = tuple((int(t, 16), Level.STUDY) for t in ODD_ATTRS)
    query = Query(Level.STUDY, STUDY_ROOT, (), return_tags=tags, charset=charset)
    compiled = compile_query(query)
    packed = zlib.compress(json.dumps(ODD_ATTRS).encode())
    row = Row(compiled, {label(Level.STUDY, "attrs"): packed})
    expected = pydicom_bytes(build_identifier(query, compiled, row, CONTEXT), syntax)
    assert IdentifierEncoder(query, CONTEXT, syntax)(compiled, row) == expected
