"""Rendering quality against a running pypacs: polarity (MONOCHROME1, Presentation LUT Shape),
the VOI LUT Sequence, the frame asked for of a multi-frame image, downscaling without
aliasing, and an encapsulated PDF rendered as its document. Pixels are compared with values
computed from the generated definitions (tests/viewerdata.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from findfixtures import serve_datasets
from serving import RunningServer
from viewerdata import (
    STEPS,
    STUDY,
    checkerboard,
    checkerboard_image,
    encapsulated_pdf,
    frame_pattern,
    frames_image,
    inverse_shape,
    monochrome1,
    rendering_set,
    text_sr,
    voi_expected,
    voi_lut,
)
from wadodata import error, full_range, window


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    pdf, _ = encapsulated_pdf()
    srv = serve_datasets(
        tmp_path_factory, "render-quality", datasets=[*rendering_set(), text_sr(), pdf]
    )
    try:
        yield srv
    finally:
        srv.kill()


def url(server: RunningServer, ds: Any) -> str:
    return (
        f"http://127.0.0.1:{server.http_port}/dicom-web/studies/{STUDY}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def png(response: httpx.Response) -> NDArray[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as img:
        return np.asarray(img)


def get(address: str, accept: str = "image/png", **params: str) -> httpx.Response:
    return httpx.get(address, headers={"accept": accept}, params=params, timeout=60)


def test_monochrome1_lowest_value_is_white(server: RunningServer) -> None:
    got = png(get(f"{url(server, monochrome1())}/rendered"))
    assert got[0, 0] == 255  # stored 0, the lowest: white
    assert got[-1, 0] == 0  # stored 700, the highest: black
    np.testing.assert_array_equal(got, 255 - full_range(np.repeat(STEPS[:, None], 8, axis=1)))


def test_presentation_lut_shape_inverse(server: RunningServer) -> None:
    got = png(get(f"{url(server, inverse_shape())}/rendered"))
    assert got[0, 0] == 255
    np.testing.assert_array_equal(got, 255 - full_range(np.repeat(STEPS[:, None], 8, axis=1)))


def test_voi_lut_sequence_maps_values(server: RunningServer) -> None:
    address = f"{url(server, voi_lut())}/rendered"
    got = png(get(address))
    np.testing.assert_array_equal(got, voi_expected())
    assert list(got[0, :4]) == [0, 0, 0, 10]  # below the first value mapped: the first entry
    assert got[0, -1] == 255  # past the table: its last entry
    # A window asked for replaces the LUT (PS3.4 N.2.1.1).
    windowed = png(get(address, window="103.5,11,linear"))
    values = np.tile(np.arange(98, 110, dtype=np.float64), (4, 1))
    np.testing.assert_array_equal(windowed, window(values, 103.5, 11, "linear"))
    assert not np.array_equal(windowed, got)


@pytest.mark.parametrize("frame", [1, 7, 10])
def test_frame_n_renders_frame_n(server: RunningServer, frame: int) -> None:
    got = png(get(f"{url(server, frames_image())}/frames/{frame}/rendered"))
    np.testing.assert_array_equal(got, full_range(frame_pattern(frame - 1).astype(np.float64)))
    bright = np.argwhere(got == 255)
    assert bright.tolist() == [[(frame - 1) % 8, (frame - 1) % 8]]


def test_downscaling_is_not_aliased(server: RunningServer) -> None:
    got = png(get(f"{url(server, checkerboard_image())}/rendered", viewport="128,128"))
    assert got.shape == (128, 128)
    # A checkerboard of 1-pixel cells shrunk 4 times is mid-grey, not black, white or
    # stripes (what a nearest-neighbour filter gives).
    outside = np.concatenate([got[4:28, 4:124].ravel(), got[100:124, 4:124].ravel()])
    assert abs(float(outside.mean()) - 127.5) < 6
    assert float(outside.std()) < 6
    assert got[64, 64] == 255  # the solid middle square stays white
    reference = Image.fromarray(checkerboard().astype(np.uint8)).resize(
        (128, 128), Image.Resampling.LANCZOS
    )
    difference = np.abs(got.astype(np.int16) - np.asarray(reference).astype(np.int16))
    assert float(difference.mean()) < 2
    nearest = Image.fromarray(checkerboard().astype(np.uint8)).resize(
        (128, 128), Image.Resampling.NEAREST
    )
    assert float(np.abs(got.astype(np.int16) - np.asarray(nearest)).mean()) > 60


def test_encapsulated_pdf_rendered_as_its_document(server: RunningServer) -> None:
    ds, document = encapsulated_pdf()
    address = f"{url(server, ds)}/rendered"
    for accept in ("application/pdf", "*/*", "text/html,application/xhtml+xml,*/*;q=0.8"):
        response = get(address, accept=accept)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/pdf"
        assert response.content == document  # without the pad byte
    assert "application/pdf" in error(get(address, accept="image/jpeg"), 406, "Accept")
    # An image is not sent as a PDF, nor an SR.
    image = f"{url(server, monochrome1())}/rendered"
    assert "image/jpeg" in error(get(image, accept="application/pdf"), 406, "Accept")
    error(get(f"{url(server, text_sr())}/rendered", accept="application/pdf"), 406, "Accept")
    error(get(f"{address}", accept="application/pdf", window="abc"), 400, "window")
