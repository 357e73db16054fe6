"""The header scan (archive/scan.py) gives what the pydicom path gives: the same index record
(columns and each level's DICOM JSON) for every file of the test corpora, the same refusal
for broken ones, and on any bytes a header or InvalidInstance, never anything else."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_files
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pypacs.archive.ingest import (
    ScannedHeader,
    build_record,
    configure_pydicom,
    read_header,
    scan_header,
    unpack_attributes,
)
from pypacs.archive.part10 import file_meta
from pypacs.archive.scan import scan_part10
from pypacs.errors import InvalidInstance

from awkward import library_files, made
from dicomgen import Spec, dataset_bytes, make_dataset, write, write_as

LEVELS = ("patient", "study", "series", "instance")


def outcome(header_of: Any, data: bytes) -> tuple[str, Any]:
    try:
        header = header_of(data)
    except InvalidInstance as exc:
        return "refused", exc.kind
    record = build_record(header, "ab/key", len(data))
    rows = {level: getattr(record, level) for level in LEVELS}
    return "stored", {
        level: (row.values, unpack_attributes(row.attrs)) for level, row in rows.items()
    }


def specs() -> list[tuple[Spec, str]]:
    return [
        (Spec("P1", "Doe^John", 1, 1, 1, rows=64), ExplicitVRLittleEndian),
        (Spec("P2", "Roe^Jane^^Dr", 2, 3, 4, modality="MR", issuer="HOSP"), ImplicitVRLittleEndian),
        (Spec("P3", "Müller^Jürgen", 1, 1, 2, charset="ISO_IR 100"), ExplicitVRLittleEndian),
        (
            Spec("P4", "Yamada^Tarou=山田^太郎", 1, 1, 1, charset="ISO_IR 192"),
            ImplicitVRLittleEndian,
        ),
        (Spec("P5", "", 1, 1, 1, sex="", birth_date=""), ExplicitVRLittleEndian),
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    configure_pydicom()
    folder = tmp_path_factory.mktemp("corpus")
    files = [(f"gen-{n}", write_as(spec, folder, ts)) for n, (spec, ts) in enumerate(specs())]
    files += [(a.name, a.path) for a in made(folder)]
    files += library_files(folder)
    files += [
        (Path(p).name, Path(p))
        for p in get_testdata_files()
        if Path(p).is_file() and Path(p).stat().st_size < 4_000_000
    ]
    return [(name, path.read_bytes()) for name, path in files]


def test_same_record_or_refusal_for_every_corpus_file(corpus: list[tuple[str, bytes]]) -> None:
    scanned = 0
    for name, data in corpus:
        assert outcome(scan_header, data) == outcome(read_header, data), name
        with contextlib.suppress(InvalidInstance):
            scanned += isinstance(scan_header(data), ScannedHeader)
    assert scanned >= 30  # the scan itself answers most files, not the fall-back


@pytest.mark.parametrize(("spec", "syntax"), specs())
def test_generated_instances_are_scanned_not_parsed(
    tmp_path: Path, spec: Spec, syntax: str
) -> None:
    configure_pydicom()
    data = write_as(spec, tmp_path, syntax).read_bytes()
    header = scan_header(data)
    assert isinstance(header, ScannedHeader)
    assert header.sop_instance_uid == make_dataset(spec).SOPInstanceUID
    assert header.identity.transfer_syntax == syntax


def test_cut_short_and_mismatch_refused_as_before(tmp_path: Path) -> None:
    configure_pydicom()
    data = write(Spec("P1", "Doe^John", 1, 1, 1), tmp_path).read_bytes()
    for cut in (200, 400, len(data) - 10):
        assert outcome(scan_header, data[:cut]) == outcome(read_header, data[:cut])
        assert outcome(scan_header, data[:cut])[0] == "refused"
    with pytest.raises(InvalidInstance) as refused:
        scan_header(data, expect_sop_instance("1.2.3"))
    assert refused.value.kind == "mismatch"
    assert refused.value.sop_instance == make_dataset(Spec("P1", "x", 1, 1, 1)).SOPInstanceUID


def expect_sop_instance(uid: str) -> Any:
    from pypacs.archive.ingest import Expectation

    return Expectation(sop_instance=uid)


def test_a_length_of_4_gib_is_never_allocated(tmp_path: Path) -> None:
    spec = Spec("P1", "Doe^John", 1, 1, 1)
    body = dataset_bytes(write(spec, tmp_path))
    ds = make_dataset(spec)
    # (0010,1000) Other Patient IDs, LO... as UT claiming 4 GiB - 2 bytes.
    bogus = b"\x10\x00\x00\x10UT\x00\x00\xfe\xff\xff\xff" + b"x" * 16
    data = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian) + body[:40]
    tracemalloc.start()
    try:
        assert scan_part10(data + bogus) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write(Spec("P1", "Doe^John", 1, 1, 1), tmp_path_factory.mktemp("s")).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_bytes_give_a_header_or_invalid_instance(sample: bytes, data: st.DataObject) -> None:
    configure_pydicom()
    meta_end = 144 + int.from_bytes(sample[140:144], "little")
    at = data.draw(st.integers(meta_end, len(sample) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=64))
    cut = data.draw(st.booleans())
    mutated = sample[:at] + junk + (b"" if cut else sample[at + len(junk) :])
    assert isinstance(scan_part10(mutated), object)  # never raises
    try:
        new = outcome(scan_header, mutated)
    except InvalidInstance:  # pragma: no cover - outcome catches it
        raise
    assert new == outcome(read_header, mutated)


# IS and DS texts the scan decodes itself, and odd ones it must leave to pydicom: each gives
# the record the pydicom path gives.
NUMBER_TEXTS = [
    ("IS", b"1 "),
    ("IS", b" -42"),
    ("IS", b"+7\\8\\9 "),
    ("IS", b"2147483648"),  # past the 32-bit range
    ("IS", b"1.0 "),
    ("IS", b"1\\\\2 "),  # an empty item
    ("IS", b"abc "),
    ("DS", b"1.0 "),
    ("DS", b"120 "),
    ("DS", b"-250.0\\-250.0\\1.0 "),
    ("DS", b".5\\1e3\\-2.5E-02 "),
    ("DS", b"1.\\+3 "),
    ("DS", b"1.23456789012345678 "),  # longer than 16 characters
    ("DS", b"nan "),
    ("DS", b"1,5 "),
    ("DS", b"  "),
]


@pytest.mark.parametrize(("vr", "text"), NUMBER_TEXTS)
def test_number_texts_give_the_pydicom_record(tmp_path: Path, vr: str, text: bytes) -> None:
    configure_pydicom()
    spec = Spec("P1", "Doe^John", 1, 1, 1)
    body = dataset_bytes(write(spec, tmp_path))
    ds = make_dataset(spec)
    # Explicit VR little endian: (0020,0013) Instance Number as IS, or (0018,0050) Slice
    # Thickness as DS, inserted in tag order among the top-level elements.
    tag = (0x0020, 0x0013) if vr == "IS" else (0x0018, 0x0050)
    element = (
        tag[0].to_bytes(2, "little")
        + tag[1].to_bytes(2, "little")
        + vr.encode()
        + len(text).to_bytes(2, "little")
        + text
    )
    meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    data = meta + _with_element(body, tag, element)
    # As text, so that 1 and 1.0 (an IS as a float, say) differ.
    scanned, parsed = outcome(scan_header, data), outcome(read_header, data)
    assert json.dumps(scanned, default=repr) == json.dumps(parsed, default=repr)


def _with_element(body: bytes, tag: tuple[int, int], element: bytes) -> bytes:
    """``body`` with ``element`` in place of the one with ``tag`` (or inserted before the first
    larger tag): explicit VR little endian, defined lengths, top level only."""
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
    wanted = tag[0] << 16 | tag[1]
    pos = 0
    while pos < len(body):
        group, elem = (
            int.from_bytes(body[pos : pos + 2], "little"),
            int.from_bytes(body[pos + 2 : pos + 4], "little"),
        )
        vr = body[pos + 4 : pos + 6]
        if vr in long_vrs:
            end = pos + 12 + int.from_bytes(body[pos + 8 : pos + 12], "little")
        else:
            end = pos + 8 + int.from_bytes(body[pos + 6 : pos + 8], "little")
        here = group << 16 | elem
        if here == wanted:
            return body[:pos] + element + body[end:]
        if here > wanted:
            return body[:pos] + element + body[pos:]
        pos = end
    return body + element
