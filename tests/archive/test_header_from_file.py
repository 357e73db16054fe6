"""read_header from a file (STOW-RS spools each part to one): the pixel data is checked for
length by seeking, never read, and a file cut short anywhere is refused as from bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pypacs.archive.ingest import read_header
from pypacs.errors import InvalidInstance

from dicomgen import Spec, make_dataset


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.largest = max(self.largest, len(chunk))
        return chunk


def part10(rle: bool = False) -> bytes:
    ds = make_dataset(Spec("FILE", "File^Header", 1, 1, 1, rows=256))
    if rle:
        ds.compress("1.2.840.10008.1.2.5", np.zeros((256, 256), np.uint16))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("rle", [False, True])
def test_the_header_is_read_and_the_pixel_data_is_not(rle: bool) -> None:
    data = part10(rle)
    fp = CountingFile(data)
    header = read_header(fp)
    assert header.sop_instance_uid == read_header(data).sop_instance_uid
    assert "PixelData" not in header.dataset
    assert fp.largest < 16_384 if rle else fp.largest < 256 * 256


@pytest.mark.parametrize("rle", [False, True])
@pytest.mark.parametrize("cut", [1, 7, 300])
def test_a_file_cut_short_in_its_pixel_data_is_refused(rle: bool, cut: int) -> None:
    data = part10(rle)[:-cut]
    with pytest.raises(InvalidInstance, match="cut short") as from_file:
        read_header(io.BytesIO(data))
    assert from_file.value.kind == "unparsable"
