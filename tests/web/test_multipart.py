"""The streaming multipart/related reader (RFC 2046 5.1.1): every chunking of a body gives
the same parts, preamble and epilogue are ignored, malformed bodies fail clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypacs.web.http.multipart import (
    Event,
    MultipartError,
    Part,
    PartHead,
    PartReader,
    PartStream,
    boundary_of,
    closing,
    media_type,
    part_head,
    part_tail,
    read_parts,
    related_type,
)

BOUNDARY = "XbOuNdArYx"


def body(contents: Sequence[bytes], boundary: str = BOUNDARY, preamble: bytes = b"") -> bytes:
    """A body as the writer helpers make it (each part after the first starts with CRLF)."""
    out = bytearray(preamble)
    for n, content in enumerate(contents):
        if n:
            out += part_tail()
        out += part_head(boundary, "application/dicom") + content
    out += part_tail() + closing(boundary)
    return bytes(out)


def feed_all(chunks: Sequence[bytes], boundary: str = BOUNDARY) -> list[Part]:
    reader = PartReader(boundary)
    parts: list[Part] = []
    for chunk in chunks:
        parts += reader.feed(chunk)
    reader.close()
    return parts


def contents(parts: Sequence[Part]) -> list[bytes]:
    return [bytes(p.body) for p in parts]


TRICKY = [
    b"",
    b"\r\n",
    b"--" + BOUNDARY.encode(),  # boundary text without the CRLF before it
    b"x\r\n--" + BOUNDARY.encode() + b"Z and more",  # followed by neither "--" nor CRLF
    b"\r\n--" + BOUNDARY[:-1].encode(),  # a delimiter cut short
    b"\r\n--" + BOUNDARY.encode() + b"-x",  # a single "-" after it
    bytes(range(256)) * 3,
]


def test_whole_body_in_one_chunk() -> None:
    parts = feed_all([body(TRICKY)])
    assert contents(parts) == TRICKY
    assert all(p.content_type == "application/dicom" for p in parts)
    assert parts[0].headers == {"content-type": "application/dicom"}


def test_split_at_every_byte_position() -> None:
    data = body([b"first\r\n-", b"", b"\r\n--" + BOUNDARY.encode() + b"Q", b"last"])
    expected = contents(feed_all([data]))
    assert len(expected) == 4
    for cut in range(len(data) + 1):
        assert contents(feed_all([data[:cut], data[cut:]])) == expected, cut


def test_split_at_every_pair_of_positions() -> None:
    data = body([b"ab", b"\r\n-"], preamble=b"pre")
    expected = contents(feed_all([data]))
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert contents(feed_all([data[:i], data[i:j], data[j:]])) == expected, (i, j)


def test_byte_by_byte() -> None:
    data = body(TRICKY, preamble=b"a preamble\r\n--not the boundary\r\n")
    parts = feed_all([data[i : i + 1] for i in range(len(data))])
    assert contents(parts) == TRICKY


def test_each_part_is_returned_as_soon_as_it_is_complete() -> None:
    data = body([b"one", b"two"])
    reader = PartReader(BOUNDARY)
    first_end = data.index(b"\r\n--" + BOUNDARY.encode(), 10)
    # The delimiter and the CRLF after it decide that the first part ended.
    end_of_line = first_end + len(BOUNDARY) + 6
    assert reader.feed(data[: end_of_line - 1]) == []
    assert contents(reader.feed(data[end_of_line - 1 : end_of_line])) == [b"one"]
    assert contents(reader.feed(data[end_of_line:])) == [b"two"]
    assert reader.done


def test_preamble_epilogue_and_padding_are_ignored() -> None:
    data = (
        b"This is the preamble.\r\n"
        b"--" + BOUNDARY.encode() + b" \t \r\n"
        b"Content-Type: application/dicom\r\n\r\n"
        b"payload\r\n"
        b"--" + BOUNDARY.encode() + b"--   \r\nThis is the epilogue, with --" + BOUNDARY.encode()
    )
    parts = feed_all([data])
    assert contents(parts) == [b"payload"]
    reader = PartReader(BOUNDARY)
    reader.feed(data)
    assert reader.feed(b"\r\n--" + BOUNDARY.encode() + b"\r\n\r\nmore epilogue") == []


def test_header_fields() -> None:
    data = (
        b"--" + BOUNDARY.encode() + b"\r\n"
        b"Content-Type: application/dicom;\r\n transfer-syntax=1.2.840.10008.1.2.1\r\n"
        b"content-location: /x\r\n\r\n"
        b"A\r\n"
        b"--" + BOUNDARY.encode() + b"\r\n\r\n"  # no header fields at all
        b"B\r\n"
        b"--" + BOUNDARY.encode() + b"--"
    )
    first, second = feed_all([data])
    assert first.headers == {
        "content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
        "content-location": "/x",
    }
    assert first.content_type == "application/dicom"
    assert (second.headers, second.content_type, bytes(second.body)) == ({}, None, b"B")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "holds no part"),
        (b"no delimiter at all", "holds no part"),
        (body([b"a"])[:-4], "ends before its closing delimiter"),
        (body([b"a"]).replace(b"--\r\n", b"\r\n"), "ends before its closing delimiter"),
        (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: x\r\n", "ends before"),
    ],
)
def test_truncated_bodies(data: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        feed_all([data])


def test_malformed_header_line() -> None:
    data = b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY.encode()
    with pytest.raises(MultipartError, match="malformed header line"):
        feed_all([data + b"--"])


def test_endless_header_fields_fail_without_buffering_forever() -> None:
    reader = PartReader(BOUNDARY)
    reader.feed(b"--" + BOUNDARY.encode() + b"\r\n")
    with pytest.raises(MultipartError, match="header fields longer"):
        for _ in range(100):
            reader.feed(b"X-Long: " + b"y" * 1000 + b"\r\n")


def test_a_long_preamble_is_not_kept() -> None:
    reader = PartReader(BOUNDARY)
    for _ in range(1000):
        reader.feed(b"p" * 1000)
    assert reader.buffered < 100
    # Boundary text after the preamble's last line is no delimiter: CRLF must come before.
    assert reader.feed(b"--" + BOUNDARY.encode() + b"\r\n\r\ny") == []
    assert contents(reader.feed(b"\r\n" + body([b"z"]))) == [b"z"]


def test_no_parts_between_the_delimiters() -> None:
    reader = PartReader(BOUNDARY)
    assert reader.feed(b"--" + BOUNDARY.encode() + b"--\r\n") == []
    assert reader.done
    reader.close()


def test_media_type_and_boundary() -> None:
    assert media_type('Multipart/Related; Type="application/dicom"; boundary=abc') == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "abc"},
    )
    assert media_type(r'a/b; x="q\"uo;ted"; y = 1') == ("a/b", {"x": 'q"uo;ted', "y": "1"})
    assert boundary_of(related_type("b-1", "application/dicom")) == "b-1"
    assert boundary_of('multipart/related; boundary="0f3c f5c0"; type=x') == "0f3c f5c0"
    for bad in ("multipart/related", "multipart/related; boundary=", 'x/y; boundary=""'):
        with pytest.raises(MultipartError, match="boundary"):
            boundary_of(bad)
    with pytest.raises(MultipartError, match="not a valid boundary"):
        boundary_of("multipart/related; boundary=" + "b" * 300)


def test_read_parts_over_an_async_stream() -> None:
    data = body([b"alpha", b"beta" * 1000])

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    async def collect() -> list[bytes]:
        return [bytes(p.body) async for p in read_parts(chunks(), BOUNDARY)]

    assert anyio.run(collect) == [b"alpha", b"beta" * 1000]

    async def truncated() -> AsyncIterator[bytes]:
        yield data[:-10]

    async def consume() -> None:
        async for _ in read_parts(truncated(), BOUNDARY):
            pass

    with pytest.raises(MultipartError):
        anyio.run(consume)


_content = st.binary(max_size=60) | st.sampled_from(TRICKY)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(_content, max_size=5),
    preamble=st.sampled_from([b"", b"preamble\r\n", b"\r\n--" + BOUNDARY.encode() + b"X\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_chunking_gives_the_same_parts(
    parts: list[bytes], preamble: bytes, cuts: list[int]
) -> None:
    delimiter = b"\r\n--" + BOUNDARY.encode()
    # Content that holds a real delimiter cannot be sent in this body (RFC 2046 5.1.1).
    parts = [p for p in parts if delimiter not in b"\r\n" + p + b"\r\n"]
    data = body(parts, preamble=preamble)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert contents(feed_all(chunks)) == parts


def test_a_part_streams_through_without_being_held() -> None:
    """PartStream gives a part's content piece by piece; it keeps at most a delimiter's
    length of it between two chunks, however large the part."""
    content = bytes(range(256)) * 20_000  # 5 MB
    data = body([content, b"second"])
    stream = PartStream(BOUNDARY)
    events: list[Event] = []
    for at in range(0, len(data), 65_536):
        events += stream.feed(data[at : at + 65_536])
        assert stream.buffered < 100
    stream.close()
    heads = [e for e in events if isinstance(e, PartHead)]
    assert [h.content_type for h in heads] == ["application/dicom"] * 2
    pieces = [e for e in events if isinstance(e, bytes)]
    assert len(pieces) > 70 and max(len(p) for p in pieces) <= 65_536 + 100
    assert b"".join(pieces) == content + b"second"
    assert events.count(None) == 2 and events[-1] is None
