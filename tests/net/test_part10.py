"""Our file meta header is byte for byte what pydicom writes for the same values."""

from __future__ import annotations

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from pypacs.net.part10 import file_meta


@pytest.mark.parametrize(
    ("sop_class", "instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2"),  # odd lengths
        ("1.2.840.10008.5.1.4.1.1.7", "9" * 64, "1.2.840.10008.1.2.4.90"),
    ],
)
def test_same_bytes_as_pydicom(sop_class: str, instance: str, syntax: str) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    expected = DicomBytesIO()
    write_file_meta_info(expected, meta, enforce_standard=True)
    assert file_meta(sop_class, instance, syntax) == b"\x00" * 128 + b"DICM" + expected.getvalue()
