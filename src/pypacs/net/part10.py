"""A received C-STORE data set as a DICOM file: the data set's bytes, as they came, behind
the file meta header archive/part10.py writes (PS3.10 7.1)."""

from __future__ import annotations

from io import BytesIO
from typing import cast

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE

from pypacs.archive.part10 import file_meta as part10_meta


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information for one instance received over DIMSE."""
    return part10_meta(
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid,
        PYNETDICOM_IMPLEMENTATION_UID,
        PYNETDICOM_IMPLEMENTATION_VERSION,
    )


def received_part10(request: C_STORE, transfer_syntax_uid: str) -> bytes:
    """A received C-STORE's data set bytes, as they came, behind their file meta header."""
    meta = file_meta(
        str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), transfer_syntax_uid
    )
    return meta + cast(BytesIO, request.DataSet).getvalue()
