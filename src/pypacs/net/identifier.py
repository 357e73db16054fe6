"""C-FIND/C-GET/C-MOVE identifiers (PS3.4 C.4, PS3.7 9.3) between bytes in a presentation
context's transfer syntax and pydicom data sets, for both sides: requests we serve and
the responses we read as requestor. Identifiers are small and read once, off the per-match
path (C-FIND responses are written straight to bytes by query/encode.py).
"""

from __future__ import annotations

import zlib
from io import BytesIO
from typing import Final

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from pypacs.archive.part10 import encode_dataset
from pypacs.errors import PypacsError, TranscodeError
from pypacs.net.association import Message
from pypacs.net.pdata import BufferSink
from pypacs.query.types import InvalidQuery

# An identifier is a few keys (a C-FIND for 50,000 study UIDs is over 3 MB): a deflated
# one that inflates past this is refused.
MAX_IDENTIFIER_BYTES: Final = 16 * 1024 * 1024
# What pydicom raises on bytes that are not a data set in the syntax it was told.
_UNREADABLE = (ValueError, EOFError, KeyError, TypeError, NotImplementedError, OverflowError)


class IdentifierError(PypacsError):
    """The bytes are not an identifier in the context's transfer syntax, or a data set
    cannot be written in it."""


def decode_identifier(data: bytes | bytearray | memoryview, transfer_syntax: str) -> Dataset:
    """The data set ``data`` holds, encoded in ``transfer_syntax`` (PS3.5 A.5 for deflate).

    Raises:
        IdentifierError: deflated data that does not inflate or inflates past 16 MiB, or
            bytes pydicom cannot read as a data set.
    """
    ts = UID(transfer_syntax)
    raw = bytes(data)
    if ts.is_deflated:  # PS3.5 A.5: raw deflate, no zlib header
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_IDENTIFIER_BYTES + 1)
        except zlib.error as exc:
            raise IdentifierError(f"deflated identifier does not inflate: {exc}") from exc
        if len(raw) > MAX_IDENTIFIER_BYTES:
            raise IdentifierError(f"identifier inflates past {MAX_IDENTIFIER_BYTES} bytes")
    try:
        ds = read_dataset(BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian, len(raw))
    except _UNREADABLE as exc:
        raise IdentifierError(f"identifier does not parse: {exc}") from exc
    try:
        _convert_all(ds)
    except Exception as exc:  # pydicom raises many types on a value its VR cannot hold
        raise IdentifierError(f"identifier does not parse: {exc}") from exc
    return ds


def _convert_all(ds: Dataset) -> None:
    """Every element's value read now (pydicom reads them when first used), items included,
    so that a value its VR cannot hold (a US of three bytes) is refused here, as a data set
    that does not parse, not met halfway through a query."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` encoded in ``transfer_syntax`` (deflated when it says so).

    Raises:
        IdentifierError: pydicom cannot write ``ds`` in that syntax.
    """
    try:
        return encode_dataset(ds, transfer_syntax)
    except TranscodeError as exc:
        raise IdentifierError(str(exc)) from exc


def request_identifier(message: Message, transfer_syntax: str) -> Dataset:
    """The identifier of a C-FIND/C-GET/C-MOVE request we serve (an empty data set when
    it came without one).

    Raises:
        InvalidQuery: it does not parse (answered as the identifier not matching the SOP
            class, PS3.4 C.4.1.1.4).
    """
    sink = message.sink
    data = sink.data if isinstance(sink, BufferSink) else b""
    try:
        return decode_identifier(data, transfer_syntax)
    except IdentifierError as exc:
        raise InvalidQuery(str(exc), unsupported=True) from exc
