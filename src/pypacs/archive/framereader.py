"""Frames of a stored instance read where they lie: the header parsed with its large values
deferred, then only the bytes of the frames asked for, so that one frame of a large
multi-frame instance in an object store fetches a small part of it.

Native little endian pixel data is cut at the frame's offset (PS3.5 8.1.1, Annex A.1);
encapsulated data (PS3.5 A.4) is found through its offset table where that table holds for
the frame asked, and otherwise by walking the fragment headers and grouping them by the same
rules as ``pixels.encoded_frames``. What is not read that way (deflated or big endian data
sets, packed 1-bit or YBR_FULL_422 native data, video) is read whole, as before.
"""

from __future__ import annotations

import copy
import io
import itertools
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

from pydicom import dcmread
from pydicom import uid as ts
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from pypacs.archive.pixels import (
    CODEC_ERRORS,
    ENCAPSULATION_ONLY,
    Fragment,
    extended_offsets,
    frame_starts,
    normalise_encapsulation,
    number_of_frames,
    offset_table,
    start_marker,
)
from pypacs.errors import StoreError, TranscodeError

READ_AHEAD = 64 * 1024  # what a header read fetches at least: most headers in one range
DEFER_SIZE = 64 * 1024  # header values larger than this are read only when used
# Fragment headers read one exact range each; past this many, the walk reads on through the
# store's own read-ahead instead (many small ranges cost more than fewer large ones).
_EXACT_READS = 64
_PIXEL_DATA = 0x7FE00010
_NUMBER_OF_FRAMES, _PER_FRAME = 0x00280008, 0x52009230
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD  # PS3.5 7.5
_UNDEFINED = 0xFFFFFFFF
_PARSE_ERRORS = (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, struct.error)
# Native syntaxes whose frames lie one after another, little endian (PS3.5 A.1, A.2).
T = TypeVar("T")
_NATIVE = frozenset({ts.ImplicitVRLittleEndian, ts.ExplicitVRLittleEndian})


class RangeFile:
    """A stored file read with a small read-ahead for parsing (``read``) and exact ranges
    for bulk values (``fetch``), over the store's file (whose own read-ahead is bypassed
    through ``read1``)."""

    def __init__(self, fp: BinaryIO, name: str) -> None:
        self._fp = fp
        self._name = name
        self._pos = 0
        self._buffer = b""
        self._buffer_at = 0
        self.small_reads = 0

    # -- what pydicom's reader uses: read, seek, tell --------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = self._raw(self._pos, -1)
            self._pos += len(data)
            return data
        offset = self._pos - self._buffer_at
        if offset >= 0 and offset + size <= len(self._buffer):
            data = self._buffer[offset : offset + size]
        elif size >= READ_AHEAD:
            data = self._raw(self._pos, size)
        else:
            self._buffer, self._buffer_at = self._raw(self._pos, READ_AHEAD), self._pos
            data = self._buffer[:size]
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            base = self._call(lambda: self._fp.seek(0, io.SEEK_END))
        else:
            base = self._pos if whence == io.SEEK_CUR else 0
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._fp.close()

    # -- exact ranges --------------------------------------------------------------------

    def fetch(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer at the end), in one range."""
        return self._raw(offset, size)

    def peek(self, offset: int, size: int) -> bytes:
        """A few bytes at ``offset``: an exact range while few were asked, then through the
        store's read-ahead."""
        self.small_reads += 1
        if self.small_reads <= _EXACT_READS:
            return self._raw(offset, size)
        return self._call(lambda: (self._fp.seek(offset), self._fp.read(size))[1])

    def _raw(self, offset: int, size: int) -> bytes:
        def read() -> bytes:
            self._fp.seek(offset)
            if size < 0:
                return self._fp.read()
            read1 = getattr(self._fp, "read1", self._fp.read)
            parts, left = [], size
            while left > 0:
                part = read1(left)
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            return b"".join(parts)

        return self._call(read)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OSError as exc:
            raise StoreError(f"cannot read the stored {self._name}: {exc}") from exc


class StoredFrames:
    """The header of a stored instance and its frames one at a time; closes its file.

    ``header`` is the data set without pixel data values read: its Pixel Data, when present,
    is a deferred element (read whole only if something asks for its value), and its values
    over ``DEFER_SIZE`` are read from the file when used, so it is good while this is open.

    Raises (at construction):
        StoreError: the file cannot be read or its header does not parse.
    """

    def __init__(self, fp: BinaryIO, syntax: str, name: str) -> None:
        self._file = RangeFile(fp, name)
        self.name = name
        self.syntax = UID(syntax)
        self._fragments: list[tuple[int, Fragment]] | None = None
        self._first: tuple[int, list[int]] | None = None
        self._located: dict[int, list[tuple[int, int]]] = {}
        self._whole = False
        try:
            self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> StoredFrames:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def count(self) -> int:
        """Number of Frames as stored (1 when absent)."""
        return number_of_frames(self.header)

    # -- the header ------------------------------------------------------------------------

    def _parse(self, **kwargs: Any) -> FileDataset:
        try:
            return dcmread(self._file, **kwargs)
        except _PARSE_ERRORS as exc:
            raise StoreError(f"stored {self.name} does not parse: {exc}") from exc

    def _read_header(self) -> None:
        if self.syntax not in _NATIVE and not self._lazy_encapsulated():
            return self._read_whole()
        header = self._parse(defer_size=DEFER_SIZE, stop_before_pixels=True)
        at = self._file.tell()
        head = self._file.fetch(at, 12)
        if len(head) < 8:  # no pixel data: the header is the whole data set
            self.header = header
            return None
        tag = (struct.unpack_from("<H", head)[0] << 16) | struct.unpack_from("<H", head, 2)[0]
        implicit = self.syntax == ts.ImplicitVRLittleEndian
        if tag != _PIXEL_DATA or (not implicit and len(head) < 12):
            return self._read_whole()  # float pixel data, or something unforeseen
        if implicit:
            vr, length, value_at = "", struct.unpack_from("<L", head, 4)[0], at + 8
        else:
            vr, length, value_at = (
                head[4:6].decode("latin-1"),
                struct.unpack_from("<L", head, 8)[0],
                at + 12,
            )
        if not self._frames_apart(header, length):
            return self._read_whole()
        # PS3.5 A.1 c: OW above 8 bits allocated, where the implicit syntax does not say.
        self._vr = vr or ("OW" if int(header.get("BitsAllocated") or 8) > 8 else "OB")
        self._value_at, self._length = value_at, length
        # Deferred, as pydicom leaves a large value: read whole only when its value is used
        # (with the VR pydicom's reader gives it: none in the implicit syntax).
        header[_PIXEL_DATA] = RawDataElement(
            Tag(_PIXEL_DATA), vr or None, length, None, value_at, implicit, True
        )
        self.header = header
        return None

    def _lazy_encapsulated(self) -> bool:
        return self.syntax.is_encapsulated and self.syntax not in ts.MPEGTransferSyntaxes

    def _frames_apart(self, header: Dataset, length: int) -> bool:
        """Whether each frame can be read on its own: encapsulated (undefined length), or
        native whole bytes a sample with frames one after another."""
        if self.syntax.is_encapsulated:
            return length == _UNDEFINED
        try:
            bits = int(header.BitsAllocated)
            int(header.Rows), int(header.Columns)
        except (AttributeError, TypeError, ValueError):
            return False
        return (
            length != _UNDEFINED
            and bits % 8 == 0
            and bits > 0
            and header.get("PhotometricInterpretation") != "YBR_FULL_422"
        )

    def _read_whole(self) -> None:
        self._file.seek(0)
        ds = self._parse()
        normalise_encapsulation(ds, self.syntax)
        self.header, self._whole = ds, True

    # -- frames ----------------------------------------------------------------------------

    def _frame_size(self) -> int:
        h = self.header
        samples = int(h.Rows) * int(h.Columns) * int(h.get("SamplesPerPixel") or 1)
        return samples * int(h.BitsAllocated) // 8

    def locate(self, index: int) -> list[tuple[int, int]]:
        """Where frame ``index`` (from 0) lies: the offset and length of each of its pieces.

        Raises:
            TranscodeError: the frame cannot be found.
        """
        if self._whole:
            return []
        if index not in self._located:
            self._located[index] = self._pieces(index)
        return self._located[index]

    def _pieces(self, index: int) -> list[tuple[int, int]]:
        if not self.syntax.is_encapsulated:
            size = self._frame_size()
            if (index + 1) * size > self._length:
                raise TranscodeError(
                    f"the pixel data holds {self._length} bytes, too few for frame "
                    f"{index + 1} of {size} bytes"
                )
            return [(self._value_at + index * size, size)]
        return self._encapsulated(index)

    def frame(self, index: int) -> bytes:
        """Frame ``index`` (from 0) as stored: native bytes or the encoded frame (one
        fragment or several joined).

        Raises:
            TranscodeError: the frame cannot be found.
        """
        if self._whole:
            return _whole_frame(self.header, self.syntax, index, self._frame_size)
        where = self.locate(index)
        data = b"".join(self._file.fetch(at, size) for at, size in where)
        if len(data) != sum(size for _, size in where):
            raise TranscodeError(f"the stored {self.name} ends within frame {index + 1}")
        return data

    def image(self, index: int) -> tuple[Dataset, int]:
        """A data set holding frame ``index`` (from 0) for pydicom's decoders and the
        renderer, and that frame's index in it: the header with that frame alone (its own
        per-frame functional group), or the whole instance when it was read whole.

        Raises:
            TranscodeError: the frame cannot be found.
        """
        if self._whole:
            return self.header, index
        frame = self.frame(index)
        # keys(), not the data set itself: iterating it would read its deferred values.
        elements: dict[BaseTag, DataElement | RawDataElement] = {
            tag: self.header.get_item(tag, keep_deferred=True)
            for tag in self.header.keys()  # noqa: SIM118
        }
        for tag in (*ENCAPSULATION_ONLY, _PIXEL_DATA):
            elements.pop(Tag(tag), None)
        h = self.header
        implicit, little = h.original_encoding
        ds = FileDataset(
            self._file, elements, None, h.file_meta, bool(implicit), little is not False
        )
        # New elements, not new values: the header's own are shared with this data set.
        if "NumberOfFrames" in ds:
            ds[_NUMBER_OF_FRAMES] = DataElement(_NUMBER_OF_FRAMES, "IS", 1)
        per_frame = h.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None:
            own = [copy.copy(per_frame[index])] if index < len(per_frame) else []
            ds[_PER_FRAME] = DataElement(_PER_FRAME, "SQ", Sequence(own))
        if self.syntax.is_encapsulated:
            element = DataElement(_PIXEL_DATA, "OB", encapsulate([frame], has_bot=True))
            element.is_undefined_length = True
        else:
            element = DataElement(_PIXEL_DATA, self._vr, frame + b"\0" * (len(frame) % 2))
        ds[_PIXEL_DATA] = element
        return ds, 0

    # -- encapsulated pixel data (PS3.5 A.4) ---------------------------------------------

    def _item(self, at: int, size: int = 8) -> tuple[int, int, bytes]:
        """The tag, length and first value bytes of the item header at ``at``."""
        head = self._file.peek(at, size)
        if len(head) < 8:
            raise TranscodeError(
                "the encapsulated pixel data does not parse: it ends without its delimiter"
            )
        group, element, length = struct.unpack_from("<HHL", head)
        return (group << 16) | element, length, head[8:]

    def _first_item(self) -> tuple[int, list[int]]:
        """Where the first fragment's item begins, and the Basic Offset Table."""
        if self._first is None:
            tag, length, _ = self._item(self._value_at)
            if tag != _ITEM:
                raise TranscodeError("the encapsulated pixel data holds no fragment")
            table = self._file.fetch(self._value_at + 8, length) if length else b""
            if len(table) != length:
                raise TranscodeError("the encapsulated pixel data does not parse: it is cut short")
            self._first = self._value_at + 8 + length, offset_table(table)
        return self._first

    def _encapsulated(self, index: int) -> list[tuple[int, int]]:
        first, bot = self._first_item()
        if self.count > 1:
            table = extended_offsets(self.header)
            try:
                by_table = self._by_table(first, table if table is not None else bot, index)
            except TranscodeError:  # an offset past the end: the walk decides
                by_table = None
            if by_table is not None:
                return by_table
        fragments = self._walk(first)
        starts = frame_starts(
            self.count,
            self.syntax,
            bot,
            extended_offsets(self.header),
            [f for _, f in fragments],
        )
        bounds = [*starts, len(fragments)]
        return [(at + 8, f.length) for at, f in fragments[bounds[index] : bounds[index + 1]]]

    def _walk(self, first: int) -> list[tuple[int, Fragment]]:
        """Every fragment after the offset table: its item's offset, length and first bytes."""
        if self._fragments is None:
            fragments, at = [], first
            while True:
                tag, length, head = self._item(at, 12)
                if tag == _SEQUENCE_END:
                    break
                if tag != _ITEM or length == _UNDEFINED:
                    raise TranscodeError(
                        f"the encapsulated pixel data does not parse: no item at byte {at}"
                    )
                fragments.append((at, Fragment(length, head[:length])))
                at += 8 + length
            if not fragments:
                raise TranscodeError(
                    "the encapsulated pixel data holds no fragment after its offsets"
                )
            self._fragments = fragments
        return self._fragments

    def _by_table(self, first: int, table: list[int], index: int) -> list[tuple[int, int]] | None:
        """Frame ``index`` where the offset table says, when the table holds one offset a
        frame and holds there: an item where the frame begins, its fragments ending exactly
        where the next frame's item begins (or at the delimiter), the frame marker on its
        first fragment and the next frame's only, and for RLE a single fragment (PS3.5
        A.4.2). None otherwise, for the walk over every fragment to decide."""
        marker = start_marker(self.syntax)
        if marker is None and self.syntax != ts.RLELossless:
            return None
        count = self.count
        if (
            len(table) != count
            or table[0] != 0
            or any(b <= a for a, b in itertools.pairwise(table))
        ):
            return None
        at = first + table[index]
        end = first + table[index + 1] if index + 1 < count else None
        pieces: list[tuple[int, int]] = []
        while end is None or at < end:
            tag, length, head = self._item(at, 12)
            if tag == _SEQUENCE_END and end is None and pieces:
                break
            if tag != _ITEM or length == _UNDEFINED:
                return None
            starts_frame = marker is not None and head[: len(marker)] == marker
            if marker is not None and starts_frame != (not pieces):
                return None
            pieces.append((at + 8, length))
            at += 8 + length
        if self.syntax == ts.RLELossless and len(pieces) != 1:
            return None
        if end is not None:  # the next frame begins where the table says, and as a frame
            tag, _, head = self._item(end, 12)
            if at != end or tag != _ITEM or (marker is not None and not head.startswith(marker)):
                return None
        return pieces


def _whole_frame(ds: Dataset, syntax: UID, index: int, size: Any) -> bytes:
    """Frame ``index`` of an instance read whole: the encoded frame, or native bytes."""
    if syntax.is_encapsulated:
        try:
            return get_frame(ds.PixelData, index, number_of_frames=number_of_frames(ds))
        except CODEC_ERRORS as exc:
            raise TranscodeError(f"cannot find frame {index + 1} in the pixel data: {exc}") from exc
    frame_size = size()
    return bytes(ds.PixelData[index * frame_size : (index + 1) * frame_size])
