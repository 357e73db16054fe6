"""Joining DICOM JSON objects as text, keeping their members in tag order (PS3.18 F.2.2).

An instance's metadata is the union of its four levels' attribute sets, each stored as the
text of one DICOM JSON object. Parsing and re-serialising every instance costs more than
the rest of a metadata request together, so the parents' members are cut out of their text
once and spliced into each instance's text where their tags belong.

The splitting relies on what the archive stores: ASCII-only JSON (non-ASCII escaped), with
members written as ``"ggggeeee":{"vr":"..."``. Inside a string a double quote is always
escaped, so that pattern only occurs at the start of a member: at the top level or, within
a sequence (VR SQ), in an item. Sequences are few; their extent is found by decoding them.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from itertools import accumulate
from operator import add

# What follows a member's key: '"ggggeeee' + _SEPARATOR + 'XX",...}'.
_SEPARATOR = b'":{"vr":"'
_KEY = len(b'"ggggeeee')
_VALUE = len(b'"ggggeeee":')  # from a member's start to its value's "{"
_SEQUENCE = re.compile(rb'"[0-9A-F]{8}":\{"vr":"SQ"')
_DECODER = json.JSONDecoder()

Member = tuple[bytes, bytes]  # (tag as 8 hex digits, '"tag":{...}')


class Members:
    """The top-level members of one DICOM JSON object's text: keys and start offsets."""

    def __init__(self, text: bytes) -> None:
        if not text.isascii():
            raise ValueError("stored DICOM JSON is expected in ASCII")
        pieces = text.split(_SEPARATOR)
        keys = [piece[-8:] for piece in pieces[:-1]]
        ends = accumulate(map(len, pieces[:-1]))
        step = len(_SEPARATOR)
        starts = list(map(add, ends, range(-_KEY, step * len(keys) - _KEY, step)))
        if b'"vr":"SQ"' in text:
            _drop_nested(text, keys, starts)
        self.text = text
        self.keys = keys
        self.starts = starts

    def __contains__(self, key: bytes) -> bool:
        i = bisect_left(self.keys, key)
        return i < len(self.keys) and self.keys[i] == key

    def members(self) -> list[Member]:
        """Each member as (key, its text)."""
        if not self.keys:
            return []
        ends = [start - 1 for start in self.starts[1:]] + [len(self.text) - 1]
        return [
            (key, self.text[start:end])
            for key, start, end in zip(self.keys, self.starts, ends, strict=True)
        ]

    def with_members(self, inserts: list[Member]) -> bytes:
        """The object's text with ``inserts`` (sorted by key, none already present) placed
        among its members in key order."""
        text, keys, starts = self.text, self.keys, self.starts
        count, body_end = len(keys), len(text) - 1
        segments: list[bytes] = []
        prev = 1
        for key, member in inserts:
            j = bisect_left(keys, key)
            pos = starts[j] if j < count else body_end
            if pos > prev:
                # The run of own members before this one, without its trailing comma.
                segments.append(text[prev : pos - 1] if j < count else text[prev:pos])
                prev = pos
            segments.append(member)
        if body_end > prev:
            segments.append(text[prev:body_end])
        return b"{" + b",".join(segments) + b"}"


def _drop_nested(text: bytes, keys: list[bytes], starts: list[int]) -> None:
    """Remove the members of sequence items from ``keys``/``starts``."""
    decoded = text.decode("ascii")
    covered = 0
    for match in _SEQUENCE.finditer(text):
        begin = match.start()
        if begin < covered:  # a sequence inside an item of one already skipped
            continue
        _, covered = _DECODER.raw_decode(decoded, begin + _VALUE)
        first = bisect_right(starts, begin)
        last = bisect_left(starts, covered)
        del keys[first:last]
        del starts[first:last]


def member(key: str, value: object) -> Member:
    """One member built from a Python value."""
    return key.encode(), json.dumps({key: value}, separators=(",", ":")).encode()[1:-1]
