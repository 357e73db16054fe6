"""WADO-RS rendered resources and thumbnails against a running pypacs (PS3.18 8.3.5.1,
10.4.1.1.5-6): PNG pixels compared with the window computed here from the definitions."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from numpy.typing import NDArray
from PIL import Image

from wadodata import STUDY, Archive, Item, error, full_range, parts, related_type, window


def get(url: str, accept: str | None = "image/png", **params: str) -> httpx.Response:
    headers = {"accept": accept} if accept is not None else {}
    return httpx.get(url, headers=headers, params=params, timeout=30)


def image(data: bytes, media: str = "PNG") -> NDArray[Any]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == media
        return np.asarray(img)


def png(response: httpx.Response) -> NDArray[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return image(response.content)


def modality(item: Item) -> NDArray[np.float64]:
    """Rescale Slope 2, Intercept -1024 (the CT slices of the set)."""
    assert item.pixels is not None
    return item.pixels.astype(np.float64) * 2 - 1024


def plain(item: Item, frame: int | None = None) -> NDArray[Any]:
    """An image without rescale or window: its full range of values to 0..255."""
    assert item.pixels is not None
    values = item.pixels if frame is None else item.pixels[frame]
    return full_range(values.astype(np.float64))


def test_the_instance_window_rescale_and_polarity(wado: Archive) -> None:
    ct1, ct2, ct3 = wado["ct1"], wado["ct2"], wado["ct3"]
    expected = window(modality(ct1), 40, 400, "linear")
    np.testing.assert_array_equal(png(get(f"{wado.url(ct1)}/rendered")), expected)
    # No window in the instance: its lowest value black, its highest white.
    np.testing.assert_array_equal(png(get(f"{wado.url(ct2)}/rendered")), full_range(modality(ct2)))
    # MONOCHROME1, with its own sigmoid window (VOI LUT Function).
    inverted = 255 - window(modality(ct3), 1000, 3000, "sigmoid")
    np.testing.assert_array_equal(png(get(f"{wado.url(ct3)}/rendered")), inverted)


@pytest.mark.parametrize(
    ("text", "center", "width", "function"),
    [
        ("100,500,linear", 100, 500, "linear"),
        ("-300.5,1200.25,linear-exact", -300.5, 1200.25, "linear-exact"),
        ("0,800,sigmoid", 0, 800, "sigmoid"),
        ("2000,2", 2000, 2, "linear"),
    ],
)
def test_window_parameter(
    wado: Archive, text: str, center: float, width: float, function: str
) -> None:
    ct1 = wado["ct1"]
    got = png(get(f"{wado.url(ct1)}/rendered", window=text))
    np.testing.assert_array_equal(got, window(modality(ct1), center, width, function))


def test_decoded_and_colour_images(wado: Archive, client: DICOMwebClient) -> None:
    for label in ("jpeg-ls", "j2k", "rle", "big-endian"):
        item = wado[label]
        np.testing.assert_array_equal(png(get(f"{wado.url(item)}/rendered")), plain(item))
    rgb = wado["rgb"]
    data = client.retrieve_instance_rendered(STUDY, rgb.series, rgb.sop, media_types=("image/png",))
    np.testing.assert_array_equal(image(data), rgb.pixels)


def test_jpeg_by_default_and_quality(wado: Archive) -> None:
    large = wado["large"]
    response = get(f"{wado.url(large)}/rendered", accept=None)
    assert response.headers["content-type"] == "image/jpeg"
    assert image(response.content, "JPEG").shape == (200, 300)
    low = get(f"{wado.url(large)}/rendered", accept="image/*", quality="5")
    high = get(f"{wado.url(large)}/rendered", accept="image/*", quality="100")
    assert len(low.content) < len(high.content)
    # The accept query parameter (PS3.18 8.3.3.1) comes before the header.
    asked = httpx.get(
        f"{wado.url(large)}/rendered",
        params={"accept": "image/png"},
        headers={"accept": "image/jpeg"},
    )
    assert asked.headers["content-type"] == "image/png"


def test_viewport_and_source_region(wado: Archive) -> None:
    ct1 = wado["ct1"]
    full = window(modality(ct1), 40, 400, "linear")
    assert png(get(f"{wado.url(ct1)}/rendered", viewport="8,4")).shape == (4, 4)
    assert png(get(f"{wado.url(ct1)}/rendered", viewport="64,32")).shape == (32, 32)
    region = png(get(f"{wado.url(ct1)}/rendered", viewport="4,3,2,5,4,3"))
    np.testing.assert_array_equal(region, full[5:8, 2:6])
    flipped = png(get(f"{wado.url(ct1)}/rendered", viewport="4,3,6,8,-4,-3"))
    np.testing.assert_array_equal(flipped, full[5:8, 2:6][::-1, ::-1])


def test_frames_rendered(wado: Archive) -> None:
    item = wado["multiframe"]
    np.testing.assert_array_equal(png(get(f"{wado.url(item)}/frames/2/rendered")), plain(item, 1))
    np.testing.assert_array_equal(png(get(f"{wado.url(item)}/rendered")), plain(item, 0))
    response = get(f"{wado.url(item)}/frames/3,1/rendered")
    assert related_type(response) == "image/png"
    got = [image(p.body) for p in parts(response)]
    for frame, index in zip(got, (2, 0), strict=True):
        np.testing.assert_array_equal(frame, plain(item, index))
    rle = wado["multiframe-rle"]
    np.testing.assert_array_equal(png(get(f"{wado.url(rle)}/frames/3/rendered")), plain(rle, 2))


def test_series_and_study_rendered(wado: Archive) -> None:
    ct = wado["ct1"].series
    response = get(f"{wado.dicomweb}/studies/{STUDY}/series/{ct}/rendered")
    got = [image(p.body) for p in parts(response)]
    expected = [png(get(f"{wado.url(wado[label])}/rendered")) for label in ("ct1", "ct2", "ct3")]
    assert len(got) == 3
    for one, other in zip(got, expected, strict=True):
        np.testing.assert_array_equal(one, other)
    study = parts(get(f"{wado.dicomweb}/studies/{STUDY}/rendered", accept="image/jpeg"))
    images = [i for i in wado.in_study(STUDY) if i.label != "sr"]
    assert len(study) == len(images)
    assert {p.content_type for p in study} == {"image/jpeg"}
    sr = wado["sr"]
    error(get(f"{wado.dicomweb}/studies/{STUDY}/series/{sr.series}/rendered"), 406, "Accept")


def test_thumbnails(wado: Archive) -> None:
    ct = wado["ct1"].series
    middle = full_range(modality(wado["ct2"]))  # the middle one of the first series
    for url in (
        f"{wado.dicomweb}/studies/{STUDY}/thumbnail",
        f"{wado.dicomweb}/studies/{STUDY}/series/{ct}/thumbnail",
        f"{wado.url(wado['ct2'])}/thumbnail",
    ):
        np.testing.assert_array_equal(png(get(url)), middle)
    large = wado["large"]
    default = get(f"{wado.url(large)}/thumbnail", accept=None)
    assert default.headers["content-type"] == "image/jpeg"
    assert image(default.content, "JPEG").shape == (85, 128)  # fits 128 x 128
    assert png(get(f"{wado.url(large)}/thumbnail", viewport="64,64")).shape == (43, 64)
    frames = wado["multiframe"]
    np.testing.assert_array_equal(png(get(f"{wado.url(frames)}/thumbnail")), plain(frames, 1))
    one = png(get(f"{wado.url(frames)}/frames/3/thumbnail"))
    np.testing.assert_array_equal(one, plain(frames, 2))
    series = frames.series  # five instances: the third (RGB) is the middle one
    rgb = png(get(f"{wado.dicomweb}/studies/{STUDY}/series/{series}/thumbnail"))
    np.testing.assert_array_equal(rgb, wado["rgb"].pixels)


@pytest.mark.parametrize(
    ("suffix", "params", "parameter"),
    [
        ("rendered", {"window": "abc"}, "window"),
        ("rendered", {"window": "40,400,cubic"}, "window"),
        ("rendered", {"window": "40,0.5,linear"}, "window"),
        ("rendered", {"window": "40,0,sigmoid"}, "window"),
        ("rendered", {"window": "40,nan"}, "window"),
        ("rendered", {"viewport": "0,10"}, "viewport"),
        ("rendered", {"viewport": "10"}, "viewport"),
        ("rendered", {"viewport": "4,4,1,1,0,2"}, "viewport"),
        ("rendered", {"viewport": "4,4,-1,1,2,2"}, "viewport"),
        ("rendered", {"quality": "0"}, "quality"),
        ("rendered", {"quality": "101"}, "quality"),
        ("rendered", {"quality": "high"}, "quality"),
        ("thumbnail", {"viewport": "4,4,1,1,2,2"}, "viewport"),
        ("frames/0/rendered", {}, "frames"),
        ("frames/1,2/thumbnail", {}, "frames"),
    ],
)
def test_malformed_parameters_are_400(
    wado: Archive, suffix: str, params: dict[str, str], parameter: str
) -> None:
    error(get(f"{wado.url(wado['multiframe'])}/{suffix}", **params), 400, parameter)


def test_other_failures(wado: Archive) -> None:
    item = wado["multiframe"]
    assert "no frame 4" in error(get(f"{wado.url(item)}/frames/4/rendered"), 404)
    error(get(f"{wado.url(item)}/rendered", accept="image/gif"), 406, "Accept")
    error(get(f"{wado.url(wado['sr'])}/rendered"), 406, "Accept")
    error(get(f"{wado.url(wado['sr'])}/thumbnail"), 406, "Accept")
    error(get(f"{wado.dicomweb}/studies/1.2.3.4/thumbnail"), 404)


@pytest.fixture(scope="module")
def client(wado: Archive) -> DICOMwebClient:
    return DICOMwebClient(url=wado.dicomweb)
