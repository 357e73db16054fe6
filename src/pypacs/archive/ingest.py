"""Read the header of received bytes (never the pixels) and build the index record."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from io import BytesIO
from typing import Any, BinaryIO, TypeVar

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pypacs.archive.dicomjson import element_json
from pypacs.archive.scan import Scanned, check_complete, dictionary_vr, scan_part10
from pypacs.errors import InvalidInstance, InvalidKind
from pypacs.index.writes import InstanceRecord, LevelRow
from pypacs.model.attributes import BULK_DATA_THRESHOLD, BULK_DATA_VRS, level_of
from pypacs.model.keys import keys_at
from pypacs.model.levels import Level
from pypacs.model.uid import is_acceptable_uid
from pypacs.model.vr import normalise_time, pn_match_form

# PS3.4 B.2.3 / C.4.2.1: without these a stored instance cannot be placed in the hierarchy.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# PS3.10, PS3.3 Annex F: a DICOMDIR's Media Storage SOP Class; the file indexes the files of
# a medium (a CD's folder tree) and is not itself an instance of any study.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def configure_pydicom() -> None:
    """Library globals for reading what peers send: keep odd values as they are, never warn."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


@dataclass(frozen=True)
class Expectation:
    """What the caller of a store knows the instance must be; None: anything."""

    # PS3.4 B.2.3: the SOP Class and Instance UIDs of a C-STORE's command set.
    sop_class: str | None = None
    sop_instance: str | None = None
    # PS3.18 10.5.1.1: an instance sent to /studies/{study} belongs to that study.
    study: str | None = None
    # The transfer syntaxes the door stores; None: any pydicom reads.
    syntaxes: Collection[str] | None = None


@dataclass(frozen=True)
class Identity:
    """What a received file says it is (each UID from its data set, else from its File Meta
    Information; None where neither says)."""

    sop_class: str | None = None
    sop_instance: str | None = None
    study: str | None = None
    series: str | None = None
    transfer_syntax: str | None = None


@dataclass(frozen=True)
class Header:
    dataset: Dataset
    meta: FileMetaDataset

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def identity(self) -> Identity:
        ds, meta = self.dataset, self.meta
        return Identity(
            _text(ds.get("SOPClassUID")),
            _text(ds.get("SOPInstanceUID")),
            _text(ds.get("StudyInstanceUID")),
            _text(ds.get("SeriesInstanceUID")),
            _text(meta.get("TransferSyntaxUID")),
        )

    @property
    def patient_id(self) -> str:
        return str(self.dataset.get("PatientID", ""))


# The tags of the UIDs a header is placed by (REQUIRED_UIDS).
_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E


@dataclass(frozen=True)
class ScannedHeader:
    """A header read by archive/scan.py: the same answers as ``Header``, without a Dataset."""

    scanned: Scanned

    @property
    def sop_instance_uid(self) -> str:
        return str(self.scanned.values[_SOP_INSTANCE])

    @property
    def sop_class_uid(self) -> str:
        return str(self.scanned.values[_SOP_CLASS])

    @property
    def identity(self) -> Identity:
        values = self.scanned.values
        return Identity(
            _text(values.get(_SOP_CLASS)),
            _text(values.get(_SOP_INSTANCE)),
            _text(values.get(_STUDY)),
            _text(values.get(_SERIES)),
            self.scanned.transfer_syntax,
        )

    @property
    def patient_id(self) -> str:
        return str(self.scanned.values.get(0x00100020, ""))

    def acceptable(self) -> bool:
        """Whether ``_read``'s checks pass (else its path says why not)."""
        if self.scanned.media_sop_class == MEDIA_STORAGE_DIRECTORY:
            return False
        for tag in (_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES):
            value = self.scanned.values.get(tag)
            if not isinstance(value, str) or not is_acceptable_uid(value.strip()):
                return False
        return True


AnyHeader = Header | ScannedHeader


def scan_header(
    data: bytes | bytearray | memoryview,
    expect: Expectation | None = None,
    *,
    fallback: BinaryIO | None = None,
) -> AnyHeader:
    """``read_header`` with the same answers, faster: the header scanned in place
    (archive/scan.py) where it can be, else parsed by pydicom from ``fallback`` (a file
    with the same bytes, read with bounded memory) or ``data``.

    Raises:
        InvalidInstance: as for ``read_header``.
    """
    expect = expect or Expectation()
    scanned = scan_part10(data)
    if scanned is not None:
        header = ScannedHeader(scanned)
        if header.acceptable():
            return _checked(header, expect)
    return read_header(fallback if fallback is not None else bytes(data), expect)


def read_header(data: bytes | memoryview | BinaryIO, expect: Expectation | None = None) -> Header:
    """Parse a DICOM file's meta and dataset up to the pixel data, once, and check it
    against what the caller expects.

    ``data`` is the file's bytes or a seekable binary file (read from its start). A file's
    pixel data is never read into memory: its element headers are checked for length
    against the file's size instead, and elements after it are not indexed.

    The study and transfer syntax expected are checked first (a file of another study is
    refused as that whether or not it parses), then the file, then the SOP Class and
    Instance expected.

    Raises:
        InvalidInstance: the bytes are not a DICOM file, do not parse, lack a required UID,
            or are not what ``expect`` says; it names the instance where it can.
    """
    expect = expect or Expectation()
    try:
        header = _read(data)
    except InvalidInstance as exc:
        ident = identify(data)
        try:
            _check_study_and_syntax(ident, expect)
        except InvalidInstance as refused:
            raise _naming(refused, ident) from exc
        raise _naming(exc, ident) from exc.__cause__
    return _checked(header, expect)


_H = TypeVar("_H", Header, ScannedHeader)


def _checked(header: _H, expect: Expectation) -> _H:
    """``header`` once the study, syntax, SOP Class and Instance expected are checked.

    Raises:
        InvalidInstance: it is not what ``expect`` says, naming the instance.
    """
    ident = header.identity
    try:
        _check_study_and_syntax(ident, expect)
        _check_sop(header, expect)
    except InvalidInstance as exc:
        raise _naming(exc, ident) from None
    return header


def _naming(exc: InvalidInstance, ident: Identity) -> InvalidInstance:
    exc.sop_class, exc.sop_instance = ident.sop_class, ident.sop_instance
    return exc


def _check_study_and_syntax(ident: Identity, expect: Expectation) -> None:
    if expect.study is not None and ident.study is not None and ident.study != expect.study:
        # PS3.18 10.5.1.1: every instance sent to /studies/{study} belongs to that study.
        raise InvalidInstance(
            f"Study Instance UID {ident.study} is not the request's {expect.study}",
            InvalidKind.OTHER_STUDY,
        )
    syntax = ident.transfer_syntax
    if expect.syntaxes is not None and syntax is not None and syntax not in expect.syntaxes:
        raise InvalidInstance(
            f"transfer syntax {syntax} is not one pypacs stores", InvalidKind.SYNTAX_NOT_ACCEPTED
        )


def _check_sop(header: AnyHeader, expect: Expectation) -> None:
    # PS3.4 B.2.3: a data set that does not match the SOP Class it was sent as is refused.
    sop_class, sop_instance = expect.sop_class, expect.sop_instance
    if sop_class is not None and header.sop_class_uid != sop_class:
        raise InvalidInstance(
            f"dataset SOP Class UID {header.sop_class_uid} differs from the request's {sop_class}"
        )
    if sop_instance is not None and header.sop_instance_uid != sop_instance:
        raise InvalidInstance(
            f"dataset SOP Instance UID {header.sop_instance_uid} differs from the request's "
            f"{sop_instance}"
        )


def _read(data: bytes | memoryview | BinaryIO) -> Header:
    try:
        ds = _parse(data)
        if ds.file_meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            raise InvalidInstance(
                "a DICOMDIR (media directory), not an instance", InvalidKind.DICOMDIR
            )
        check_complete(ds)
        # Bulk data is kept in the blob, never in the index: drop it from the header now.
        for tag in _PIXEL_TAGS:
            if tag in ds:
                del ds[tag]
    except InvalidInstance:
        raise
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM file: {exc}", InvalidKind.NOT_DICOM) from exc
    except Exception as exc:  # pydicom raises many types on truncated or corrupt input
        raise InvalidInstance(f"dataset does not parse: {exc}", InvalidKind.UNPARSABLE) from exc
    meta = ds.file_meta
    if not meta.get("TransferSyntaxUID"):
        raise InvalidInstance(
            "file meta information lacks TransferSyntaxUID", InvalidKind.UNPARSABLE
        )
    missing = [kw for kw in REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip()]
    if missing:
        raise InvalidInstance(f"dataset lacks {', '.join(missing)}", InvalidKind.MISMATCH)
    for keyword in REQUIRED_UIDS:
        value = str(ds.get(keyword)).strip()
        if not is_acceptable_uid(value):
            # model/uid.py: what every door can serve; anything else would be stored but
            # could not be retrieved or addressed.
            raise InvalidInstance(f"{keyword} {value[:64]!r} is not a UID", InvalidKind.MISMATCH)
    return Header(ds, meta)


_IDENTITY_TAGS = [0x00080016, 0x00080018, 0x0020000D, 0x0020000E]


def identify(data: bytes | memoryview | BinaryIO) -> Identity:
    """What a file that failed ``read_header`` says it is: from as much of its data set as
    parses, else from its File Meta Information alone; never raises."""
    fp: BinaryIO = BytesIO(data) if isinstance(data, bytes | memoryview | bytearray) else data
    fp.seek(0)
    head = fp.read(144)
    for source in (fp, BytesIO(head + fp.read(max(0, _meta_length(head) - len(head))))):
        try:
            source.seek(0)
            ds = pydicom.dcmread(source, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
            meta = ds.file_meta
            # Values are converted here: a corrupt one raises as the reading does.
            return Identity(
                sop_class=_text(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")),
                sop_instance=_text(
                    ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID")
                ),
                study=_text(ds.get("StudyInstanceUID")),
                series=_text(ds.get("SeriesInstanceUID")),
                transfer_syntax=_text(meta.get("TransferSyntaxUID")),
            )
        except Exception:  # pydicom raises many types on input that is not DICOM
            continue
    return Identity()


def _meta_length(data: bytes) -> int:
    """Where the File Meta Information ends, from its group length (PS3.10 7.1), or 0."""
    # Preamble, "DICM", then (0002,0000) UL, explicit VR little endian: tag, "UL", 2 + 4 bytes.
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return 0
    return 144 + int.from_bytes(data[140:144], "little")


def _text(value: object) -> str | None:
    return None if value is None else (str(value).strip() or None)


_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
# PS3.5 7.1.2: explicit VRs whose length takes 4 bytes after 2 reserved ones.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= {b"UR", b"UT", b"UV"}


def _parse(data: bytes | memoryview | BinaryIO) -> Dataset:
    if isinstance(data, bytes | memoryview | bytearray):
        return pydicom.dcmread(BytesIO(data))
    data.seek(0)
    ds = pydicom.dcmread(data, stop_before_pixels=True)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        data.seek(0)  # pydicom inflates the whole data set anyway; checked as bytes
        return pydicom.dcmread(BytesIO(data.read()))
    _check_rest(data, ds)
    return ds


def _check_rest(fp: BinaryIO, ds: Dataset) -> None:
    """The elements from the pixel data on (where ``fp`` stands) hold as many bytes as
    their headers announce, found by seeking from header to header (PS3.5 7.1, A.4).

    Raises:
        InvalidInstance: an element is cut short.
    """
    implicit, little = ds.original_encoding
    order = "<" if little else ">"
    start = fp.tell()
    end = fp.seek(0, 2)
    fp.seek(start)
    encapsulated = False
    while fp.tell() < end:
        tag, length = _element_header(fp, order, bool(implicit and not encapsulated))
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if tag == _SEQUENCE_END:
            encapsulated = False
            continue
        if length == _UNDEFINED:
            if tag not in _PIXEL_TAGS:
                return  # a sequence after the pixel data (signatures): not walked
            encapsulated = True  # PS3.5 A.4: items follow, up to a sequence delimiter
            continue
        if fp.tell() + length > end:
            raise _cut_short(f"{where}: {end - fp.tell()} of {length} bytes")
        fp.seek(length, 1)
    if encapsulated:
        raise _cut_short("(7FE0,0010): no sequence delimiter")


def _cut_short(where: str) -> InvalidInstance:
    return InvalidInstance(f"dataset does not parse: cut short in {where}", InvalidKind.UNPARSABLE)


def _element_header(fp: BinaryIO, order: str, implicit: bool) -> tuple[int, int]:
    head = fp.read(8)
    if len(head) < 8:
        raise _cut_short("an element header")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if implicit or group == 0xFFFE:  # items and delimiters have no VR (PS3.5 7.5)
        return tag, struct.unpack(order + "I", head[4:])[0]
    if head[4:6] not in _LONG_VRS:
        return tag, struct.unpack(order + "H", head[6:])[0]
    more = fp.read(4)
    if len(more) < 4:
        raise _cut_short("an element header")
    return tag, struct.unpack(order + "I", more)[0]


def _column_value(ds: Dataset, tag: int) -> str | None:
    elem = ds.get(tag)
    return None if elem is None else _value_text(elem.value)


def _value_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    multiple = isinstance(value, MultiValue | list)
    text = "\\".join(str(v) for v in value) if multiple else str(value)
    return text or None


def _match_form(vr: str, value: str | None) -> str | None:
    """The normalised form matching compares against (see Key.match_column)."""
    if value is None:
        return None
    if vr == "PN":
        return pn_match_form(value)
    try:
        return normalise_time(value)
    except ValueError:  # not a time: such a row never matches a time range
        return None


def _is_bulk(ds: Dataset, tag: int) -> bool:
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement):
        vr = raw.VR or dictionary_vr(tag)
        length = raw.length
    else:
        vr, length = raw.VR, len(raw.value) if isinstance(raw.value, bytes) else 0
    return vr in BULK_DATA_VRS and length > BULK_DATA_THRESHOLD


def _split_attributes(ds: Dataset) -> dict[Level, dict[str, Any]]:
    """Each level's attribute set as DICOM JSON (PS3.18 F.2), bulk data left out."""
    parts: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    for tag in list(ds.keys()):
        if _is_bulk(ds, tag):
            continue
        try:
            encoded = element_json(ds[tag])
        except Exception:  # a value pydicom cannot express in JSON stays in the blob only
            continue
        parts[level_of(int(tag))][f"{int(tag):08X}"] = encoded
    return parts


def _pack(attributes: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(attributes, separators=(",", ":")).encode(), 6)


def build_record(header: AnyHeader, blob_key: str, blob_size: int) -> InstanceRecord:
    """The index record of one instance: typed column values and attribute sets per level."""
    if isinstance(header, ScannedHeader):
        parts = header.scanned.parts
        values_by_tag = header.scanned.values

        def column_value(tag: int) -> str | None:
            return _value_text(values_by_tag.get(tag))

        syntax = header.scanned.transfer_syntax
    else:
        ds = header.dataset
        parts = _split_attributes(ds)
        column_value = partial(_column_value, ds)
        syntax = str(header.meta.TransferSyntaxUID)
    rows: dict[Level, LevelRow] = {}
    for level in Level:
        values: dict[str, str | None] = {}
        for key in keys_at(level):
            if key.column is None or key.derived:
                continue
            value = column_value(key.tag)
            if key.vr == "IS" and value is not None and value.lstrip("+-").isdigit():
                value = str(int(value))  # integers compare by value (query/from_dimse.py)
            values[key.column] = value
            if key.match_column != key.column:
                values[str(key.match_column)] = _match_form(key.vr, value)
        rows[level] = LevelRow(values, partial(_pack, parts[level]))
    image = rows[Level.IMAGE]
    image.values["transfer_syntax_uid"] = syntax
    return InstanceRecord(
        patient=rows[Level.PATIENT],
        study=rows[Level.STUDY],
        series=rows[Level.SERIES],
        instance=image,
        blob_key=blob_key,
        blob_size=blob_size,
        stored_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )


def unpack_attributes(blob: bytes) -> dict[str, Any]:
    """The inverse of the packing done at ingest: compressed DICOM JSON → dict."""
    result: dict[str, Any] = json.loads(zlib.decompress(blob))
    return result
