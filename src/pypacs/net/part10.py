"""A received C-STORE data set as a DICOM file: the data set's bytes, as they came, behind
the file meta header archive/part10.py writes (PS3.10 7.1)."""

from __future__ import annotations

from io import BytesIO
from typing import cast

from pynetdicom.dimse_primitives import C_STORE

from pypacs.archive.part10 import framed


def received_part10(request: C_STORE, transfer_syntax_uid: str) -> bytes:
    """A received C-STORE's data set bytes, as they came, behind their file meta header.

    Raises:
        UnicodeError: the command's SOP Class or Instance UID is not ASCII.
    """
    return framed(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        transfer_syntax_uid,
        cast(BytesIO, request.DataSet).getvalue(),
    )
