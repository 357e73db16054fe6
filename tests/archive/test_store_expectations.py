"""store_instance checks what its caller expects in its one parse of the header: the study a
STOW-RS URL names, the transfer syntaxes a door stores, a C-STORE's SOP Class and Instance;
a refusal says its kind and names the instance."""

from __future__ import annotations

import io
from unittest import mock

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.uid import UID

from pypacs.archive import Archive, Outcome
from pypacs.errors import InvalidInstance, InvalidKind
from pypacs.model.sop import STORAGE_TRANSFER_SYNTAXES

from dicomgen import Spec, make_dataset

MPEG2 = "1.2.840.10008.1.2.4.100"


def part10(spec: Spec) -> tuple[bytes, pydicom.Dataset]:
    ds = make_dataset(spec)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


def test_a_store_parses_the_file_once_and_says_where_it_belongs(archive: Archive) -> None:
    data, ds = part10(Spec("EXPECT", "Expect^One", 1, 1, 1))
    with mock.patch("pydicom.dcmread", wraps=pydicom.dcmread) as dcmread:
        result = archive.store_instance(
            io.BytesIO(data),
            expected_study=str(ds.StudyInstanceUID),
            allowed_syntaxes=STORAGE_TRANSFER_SYNTAXES,
        )
    assert dcmread.call_count == 1
    assert result.outcome is Outcome.STORED
    assert (result.study_instance_uid, result.series_instance_uid) == (
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
    )
    again = archive.store_instance(data)
    assert again.outcome is Outcome.DUPLICATE
    assert again.study_instance_uid == str(ds.StudyInstanceUID)


def test_another_study_is_refused_and_named(archive: Archive) -> None:
    data, ds = part10(Spec("EXPECT", "Expect^Other", 2, 1, 1))
    with pytest.raises(InvalidInstance) as refused:
        archive.store_instance(data, expected_study="1.2.3.4")
    assert refused.value.kind is InvalidKind.OTHER_STUDY
    assert (refused.value.sop_class, refused.value.sop_instance) == (
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
    )
    assert archive.statistics().instances == 0


def test_a_syntax_not_stored_is_refused_before_the_data_set_is_judged(archive: Archive) -> None:
    # A data set that does not parse in a syntax the door does not store: the syntax is
    # the reason given, as STOW-RS has always answered (0xC122 rather than 0xA900).
    _, ds = part10(Spec("EXPECT", "Expect^Video", 1, 1, 2))
    meta = ds.file_meta
    meta.TransferSyntaxUID = UID(MPEG2)
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(out, meta)
    out.write(b"\x08\x00\x16\x00")
    with pytest.raises(InvalidInstance) as refused:
        archive.store_instance(out.getvalue(), allowed_syntaxes=STORAGE_TRANSFER_SYNTAXES)
    assert refused.value.kind is InvalidKind.SYNTAX_NOT_ACCEPTED
    assert refused.value.sop_instance == str(ds.SOPInstanceUID)
    with pytest.raises(InvalidInstance) as unjudged:
        archive.store_instance(out.getvalue())
    assert unjudged.value.kind is InvalidKind.MISMATCH  # its data set names no UIDs


def test_a_c_store_whose_data_set_is_another_instance_is_a_mismatch(archive: Archive) -> None:
    # PS3.4 B.2.3: checked after the file itself, as C-STORE always has.
    data, ds = part10(Spec("EXPECT", "Expect^Cmd", 1, 1, 3))
    with pytest.raises(InvalidInstance, match="differs from the request's") as refused:
        archive.store_instance(
            data, expected_sop_class=str(ds.SOPClassUID), expected_sop_instance="1.2.3"
        )
    assert refused.value.kind is InvalidKind.MISMATCH
    assert refused.value.sop_instance == str(ds.SOPInstanceUID)
