"""What goes out for a stored instance, for every door (DESIGN rule 2, bytes in are bytes
out): the stored bytes as they are when the receiver accepts their transfer syntax, else the
instance transcoded to the best syntax it accepts (archive/transcode.py), either as a bare data
set (a C-STORE sub-operation, PS3.7 9.3.1) or as a Part 10 file (WADO-RS, PS3.18 8.7.3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from pypacs.archive.part10 import encode_dataset, file_meta
from pypacs.archive.retrieve import StoredInstance, dataset_offset
from pypacs.archive.transcode import choose_syntax, transcode
from pypacs.errors import TranscodeError


class Form(Enum):
    """The shape an instance goes out in."""

    DATASET = "data set"  # the data set alone, in the syntax of a presentation context
    FILE = "file"  # a PS3.10 file: preamble, File Meta Information, data set


@dataclass(frozen=True)
class Outgoing:
    """An instance ready to send: its bytes, their transfer syntax, and whether they are the
    stored bytes (a view of them, never a copy) or made by transcoding."""

    transfer_syntax_uid: str
    data: bytes | memoryview
    as_stored: bool


def sendable_syntax(stored: str, accepted: Sequence[str]) -> str | None:
    """The transfer syntax an instance stored in ``stored`` goes out in to a receiver that
    accepts ``accepted``: ``stored`` itself when accepted, else the best one pypacs can make
    from it; None when there is none."""
    return choose_syntax(stored, accepted)


def prepare(
    blob: bytes,
    stored: StoredInstance,
    accepted: Sequence[str],
    form: Form,
    *,
    source_ae_title: str | None = None,
) -> Outgoing:
    """What to send for ``stored``, whose stored Part 10 file is ``blob``.

    ``source_ae_title`` goes into the File Meta Information of a file pypacs makes.

    Raises:
        TranscodeError: no accepted syntax can be made, or the conversion failed.
        StoreError: the stored bytes are not a Part 10 file.
    """
    syntax = stored.transfer_syntax_uid
    target = sendable_syntax(syntax, accepted)
    if target is None:
        raise TranscodeError(
            f"no accepted transfer syntax ({', '.join(accepted)}) can be made from {syntax}"
        )
    if target == syntax:
        if form is Form.FILE:
            return Outgoing(target, blob, True)
        return Outgoing(target, memoryview(blob)[dataset_offset(blob) :], True)
    ds = transcode(blob, target)
    body = encode_dataset(ds, target)
    if form is Form.DATASET:
        return Outgoing(target, body, False)
    meta = file_meta(
        str(ds.file_meta.get("MediaStorageSOPClassUID", ds.SOPClassUID)),
        str(ds.file_meta.get("MediaStorageSOPInstanceUID", ds.SOPInstanceUID)),
        target,
        source_ae_title=source_ae_title,
    )
    return Outgoing(target, meta + body, False)
