"""Our file meta header is byte for byte what pydicom writes for the same values, and names
pypacs as the implementation that wrote it."""

from __future__ import annotations

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta
from pypacs.model.uid import is_acceptable_uid


@pytest.mark.parametrize(
    ("sop_class", "instance", "syntax", "source"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", None),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2", None),  # odd lengths
        ("1.2.840.10008.5.1.4.1.1.7", "9" * 64, "1.2.840.10008.1.2.4.90", "PYPACS"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.840.10008.1.2.1", "ODD"),
    ],
)
def test_same_bytes_as_pydicom(
    sop_class: str, instance: str, syntax: str, source: str | None
) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source is not None:
        meta.SourceApplicationEntityTitle = source
    expected = DicomBytesIO()
    write_file_meta_info(expected, meta, enforce_standard=True)
    got = file_meta(sop_class, instance, syntax, source_ae_title=source)
    assert got == b"\x00" * 128 + b"DICM" + expected.getvalue()


def test_the_implementation_is_named_by_a_valid_uid_and_a_short_name() -> None:
    # PS3.5 9.1 (and B.2: the 2.25 root); PS3.7 D.3.3.2: SH, at most 16 characters.
    assert is_acceptable_uid(IMPLEMENTATION_CLASS_UID)
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert len(IMPLEMENTATION_CLASS_UID) <= 64
    assert IMPLEMENTATION_VERSION_NAME.startswith("PYPACS_")
    assert 0 < len(IMPLEMENTATION_VERSION_NAME) <= 16
