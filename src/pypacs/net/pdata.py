"""DIMSE messages over P-DATA-TF (PS3.8 9.3.5, Annex E): framing out, reassembly in.

``fragment``/``pack_messages`` cut messages into P-DATA-TF PDUs as lists of buffers for
``socket.sendmsg`` (a data set is sliced, never copied); ``Assembler`` puts received PDVs back
together and hands data-set fragments, as they arrive, to a sink the caller picks per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from pypacs.net.dimse import MAX_COMMAND_BYTES, Command, DimseError, decode_command
from pypacs.net.pdu import PDV, pdata_header, pdv_header

UNLIMITED_PDU_CAP: Final = 1024 * 1024  # our PDU size when the peer sets no limit (PS3.8 D.1.1)
_PDV_OVERHEAD: Final = 6  # item length (4), context id (1), control header (1): PS3.8 9.3.5.1
# A command this short costs less copied after its PDV head than sent as one more buffer.
_INLINE_COMMAND: Final = 256

# ---------------------------------------------------------------- framing

Buffer = bytes | memoryview


def _room(max_pdu: int) -> int:
    """Bytes of value one PDV may carry when it fills a PDU (PS3.8 9.3.5, D.1.1)."""
    if max_pdu == 0 or max_pdu > UNLIMITED_PDU_CAP:
        max_pdu = UNLIMITED_PDU_CAP  # 0 = no limit: smaller PDUs are always allowed
    if max_pdu <= _PDV_OVERHEAD:
        raise ValueError(f"maximum PDU length {max_pdu} leaves no room for a PDV value")
    return max_pdu - _PDV_OVERHEAD


def _view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _one_pdv_per_pdu(
    out: list[Buffer], context_id: int, data: Buffer, is_command: bool, room: int
) -> None:
    size = len(data) if isinstance(data, bytes) else data.nbytes
    if size <= room:  # the common case: the whole value in one PDU
        out.append(
            pdata_header(size + _PDV_OVERHEAD) + pdv_header(context_id, is_command, True, size)
        )
        out.append(data)
        return
    view = _view(data)
    for start in range(0, size, room):
        piece = view[start : start + room]
        length = len(piece)
        last = start + room >= size
        out.append(
            pdata_header(length + _PDV_OVERHEAD) + pdv_header(context_id, is_command, last, length)
        )
        out.append(piece)


def fragment(
    context_id: int,
    command: bytes,
    dataset: bytes | bytearray | memoryview | None,
    max_pdu: int,
) -> list[Buffer]:
    """One message as P-DATA-TF PDUs: buffers for ``socket.sendmsg`` (PS3.8 9.3.5, Annex E).

    The command goes in its own PDU(s), then the data set in PDUs of one PDV each, whose
    values are slices of ``dataset`` (never copies). ``max_pdu`` is the peer's Maximum Length
    (0 = none; we then send PDUs of at most 1 MiB).

    Raises:
        ValueError: ``max_pdu`` between 1 and 6 (no room for a value).
    """
    room = _room(max_pdu)
    out: list[Buffer] = []
    _one_pdv_per_pdu(out, context_id, command, True, room)
    if dataset is not None:
        data = dataset if isinstance(dataset, bytes) else _view(dataset)
        _one_pdv_per_pdu(out, context_id, data, False, room)
    return out


class _Packer:
    """Fills P-DATA-TF PDUs with as many PDVs as the peer's maximum allows."""

    __slots__ = ("body", "limit", "out", "used")

    def __init__(self, max_pdu: int) -> None:
        self.limit = _room(max_pdu) + _PDV_OVERHEAD  # the largest variable field we send
        self.out: list[Buffer] = []
        self.body: list[Buffer] = []
        self.used = 0

    def add(self, context_id: int, data: Buffer, is_command: bool) -> None:
        size = len(data) if isinstance(data, bytes) else data.nbytes
        if self.used + _PDV_OVERHEAD + size > self.limit:
            self.flush()  # a PDV that does not fit starts the next PDU
        room = self.limit - _PDV_OVERHEAD
        if size <= room:
            self._pdv(context_id, data, is_command, True, size)
            return
        view = _view(data)
        for start in range(0, size, room):
            piece = view[start : start + room]
            last = start + room >= size
            self._pdv(context_id, piece, is_command, last, len(piece))
            if not last:
                self.flush()

    def _pdv(self, context_id: int, data: Buffer, is_command: bool, last: bool, size: int) -> None:
        head = pdv_header(context_id, is_command, last, size)
        if is_command and size <= _INLINE_COMMAND:
            self.body.append(head + data)
        else:
            self.body.append(head)
            self.body.append(data)
        self.used += _PDV_OVERHEAD + size

    def flush(self) -> None:
        if self.body:
            self.out.append(pdata_header(self.used))
            self.out.extend(self.body)
            self.body = []
            self.used = 0


def pack_messages(
    context_id: int,
    messages: Iterable[tuple[bytes, bytes | bytearray | memoryview | None]],
    max_pdu: int,
) -> list[Buffer]:
    """Several messages (command, data set or None) in as few P-DATA-TF PDUs as fit.

    Used for C-FIND responses: PS3.8 9.3.5 lets one PDU carry PDVs of several messages, as
    long as each PDV holds one message's command or data set (Annex E.2).

    Raises:
        ValueError: ``max_pdu`` between 1 and 6 (no room for a value).
    """
    packer = _Packer(max_pdu)
    for command, dataset in messages:
        packer.add(context_id, command, True)
        if dataset is not None:
            packer.add(context_id, dataset if isinstance(dataset, bytes) else _view(dataset), False)
    packer.flush()
    return packer.out


# ---------------------------------------------------------------- reassembly


class Sink(Protocol):
    """Where the fragments of one message's data set go, as they arrive."""

    def write(self, data: memoryview, /) -> object:
        """Take the next fragment (a view valid only during the call)."""

    def close(self) -> None:
        """The data set is complete."""


class BufferSink:
    """A sink in memory for small data sets (identifiers), bounded by ``limit`` bytes."""

    __slots__ = ("closed", "data", "limit")

    def __init__(self, limit: int = MAX_COMMAND_BYTES * 16) -> None:
        self.data = bytearray()
        self.limit = limit
        self.closed = False

    def write(self, data: memoryview, /) -> None:
        """Append a fragment.

        Raises:
            DimseError: the data set grows past ``limit``.
        """
        if len(self.data) + len(data) > self.limit:
            raise DimseError(f"data set larger than {self.limit} bytes")
        self.data += data

    def close(self) -> None:
        """Mark the data set complete."""
        self.closed = True


@dataclass(frozen=True, slots=True)
class Message:
    """A complete DIMSE message: its context, its command, the sink holding its data set."""

    context_id: int
    command: Command
    dataset: Sink | None


_IDLE, _COMMAND, _DATASET = 0, 1, 2


class Assembler:
    """Puts received PDVs together into messages, enforcing PS3.8 Annex E and 9.3.5.

    One message at a time; its command first (fragments with the command bit, the last with
    the last bit), then its data set if the command announces one, all on one context.
    ``on_dataset_start(command)`` picks the sink of each data set.
    """

    __slots__ = ("_command", "_context_id", "_decoded", "_max_command", "_sink", "_start", "_state")

    def __init__(
        self,
        on_dataset_start: Callable[[Command], Sink],
        max_command: int = MAX_COMMAND_BYTES,
    ) -> None:
        self._start = on_dataset_start
        self._max_command = max_command
        self._state = _IDLE
        self._context_id = 0
        self._command = bytearray()
        self._decoded: Command | None = None
        self._sink: Sink | None = None

    @property
    def in_message(self) -> bool:
        """True between the first PDV of a message and its last."""
        return self._state != _IDLE

    @property
    def context_id(self) -> int | None:
        """The presentation context of the message under way, if any."""
        return None if self._state == _IDLE else self._context_id

    def feed_pdv(self, pdv: PDV) -> Message | None:
        """``feed`` for a PDV of ``pdu.iter_pdvs``."""
        return self.feed(pdv.context_id, pdv.is_command, pdv.is_last, pdv.data)

    def feed(
        self, context_id: int, is_command: bool, is_last: bool, data: bytes | memoryview
    ) -> Message | None:
        """Take one PDV; the message it completes, if any.

        Raises:
            DimseError: a PDV out of sequence, on another context, a command set too large or
                malformed; the association should abort.
        """
        if self._state == _DATASET:
            if is_command:
                raise DimseError("a command arrived before the data set under way was complete")
            if context_id != self._context_id:
                raise DimseError(
                    f"data set fragment on context {context_id}, not {self._context_id}"
                )
            sink = self._sink
            assert sink is not None and self._decoded is not None
            sink.write(data if isinstance(data, memoryview) else memoryview(data))
            if not is_last:
                return None
            sink.close()
            message = Message(context_id, self._decoded, sink)
            self._reset()
            return message
        if not is_command:  # PS3.8 E.2: the command precedes its data set
            if self._state == _IDLE:
                raise DimseError("a data set fragment arrived without a command")
            raise DimseError("a data set fragment arrived before the command was complete")
        if self._state == _IDLE:
            if is_last:  # the common case: the whole command in one PDV, no copy
                return self._command_done(context_id, data)
            self._state = _COMMAND
            self._context_id = context_id
        elif context_id != self._context_id:
            raise DimseError(f"command fragment on context {context_id}, not {self._context_id}")
        if len(self._command) + len(data) > self._max_command:
            raise DimseError(f"command set larger than {self._max_command} bytes")
        self._command += data
        if not is_last:
            return None
        raw = bytes(self._command)
        self._command.clear()
        return self._command_done(context_id, raw)

    def _command_done(self, context_id: int, raw: bytes | memoryview) -> Message | None:
        if len(raw) > self._max_command:
            raise DimseError(f"command set larger than {self._max_command} bytes")
        command = decode_command(raw)
        if not command.has_dataset:
            self._reset()
            return Message(context_id, command, None)
        self._state = _DATASET
        self._context_id = context_id
        self._decoded = command
        self._sink = self._start(command)
        return None

    def abandon(self) -> Sink | None:
        """Drop the message under way (the association ends); its unfinished sink, if any."""
        sink = self._sink
        self._reset()
        return sink

    def _reset(self) -> None:
        self._state = _IDLE
        self._command.clear()
        self._decoded = None
        self._sink = None
