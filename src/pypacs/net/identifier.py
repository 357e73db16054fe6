"""C-FIND/C-GET/C-MOVE identifiers (PS3.4 C.4) between bytes in a presentation context's
transfer syntax and pydicom data sets: requests are small, read once, off the per-match path.
"""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from pypacs.errors import PypacsError

# An identifier is a few keys: a deflated one that inflates past this is refused.
MAX_IDENTIFIER_BYTES = 16 * 1024 * 1024


class IdentifierError(PypacsError):
    """The bytes are not an identifier in the context's transfer syntax."""


def decode_identifier(data: bytes | bytearray | memoryview, transfer_syntax: str) -> Dataset:
    """The data set ``data`` holds, encoded in ``transfer_syntax`` (PS3.5 A.5 for deflate).

    Raises:
        IdentifierError: deflated data that does not inflate, or inflates past 16 MiB.
    """
    ts = UID(transfer_syntax)
    raw = bytes(data)
    if ts.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_IDENTIFIER_BYTES + 1)
        except zlib.error as exc:
            raise IdentifierError(f"deflated identifier does not inflate: {exc}") from exc
        if len(raw) > MAX_IDENTIFIER_BYTES:
            raise IdentifierError(f"identifier inflates past {MAX_IDENTIFIER_BYTES} bytes")
    return read_dataset(BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian)


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` encoded in ``transfer_syntax`` (deflated when it says so)."""
    ts = UID(transfer_syntax)
    out = DicomBytesIO()
    out.is_little_endian = ts.is_little_endian
    out.is_implicit_VR = ts.is_implicit_VR
    write_dataset(out, ds)
    data = out.getvalue()
    if ts.is_deflated:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    return data
