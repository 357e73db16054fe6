"""WADO-URI against a running pypacs (PS3.18 chapter 9): DICOM in the transfer syntax
asked for, rendered images, and a 400 naming the parameter for every malformed request."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom import uid as ts

from wadodata import ELE, Archive, Item, error, full_range, window


def uri(wado: Archive, item: Item | None, **params: str) -> httpx.Response:
    query: dict[str, str] = {"requestType": "WADO"}
    if item is not None:
        query.update(studyUID=item.study, seriesUID=item.series, objectUID=item.sop)
    query.update(params)
    return httpx.get(f"{wado.root}/wado", params={k: v for k, v in query.items() if v}, timeout=30)


def picture(response: httpx.Response, media: str = "image/png") -> NDArray[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    with Image.open(io.BytesIO(response.content)) as img:
        return np.asarray(img)


def modality(item: Item) -> NDArray[np.float64]:
    assert item.pixels is not None
    return item.pixels.astype(np.float64) * 2 - 1024


def test_an_image_is_a_jpeg_by_default(wado: Archive) -> None:
    ct1 = wado["ct1"]
    assert picture(uri(wado, ct1), "image/jpeg").shape == (16, 16)
    # Without contentType the Accept header chooses (PS3.18 9.3).
    params = {"requestType": "WADO", "studyUID": ct1.study, "seriesUID": ct1.series}
    params["objectUID"] = ct1.sop
    asked = httpx.get(f"{wado.root}/wado", params=params, headers={"accept": "application/dicom"})
    assert asked.headers["content-type"] == "application/dicom"
    assert asked.content == wado.blob(ct1)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    shown = httpx.get(f"{wado.root}/wado", params=params, headers={"accept": browser})
    assert picture(shown, "image/jpeg").shape == (16, 16)
    # No pixel data: the instance itself.
    sr = uri(wado, wado["sr"])
    assert sr.headers["content-type"] == "application/dicom"
    assert hashlib.sha256(sr.content).digest() == hashlib.sha256(wado.blob(wado["sr"])).digest()


def test_dicom_as_held_or_in_the_syntax_asked_for(wado: Archive) -> None:
    explicit = wado["explicit"]
    held = uri(wado, explicit, contentType="application/dicom")
    assert held.headers["content-type"] == "application/dicom"
    assert held.content == wado.blob(explicit)  # bytes out as they came in
    for label in ("rle", "implicit", "jpeg-ls"):
        item = wado[label]
        ds = dcmread(io.BytesIO(uri(wado, item, contentType="application/dicom").content))
        assert ds.file_meta.TransferSyntaxUID == ELE, label  # PS3.18 9.4.2.4 default
        np.testing.assert_array_equal(ds.pixel_array, item.pixels)
    asked = uri(wado, explicit, contentType="application/dicom", transferSyntax=ts.RLELossless)
    ds = dcmread(io.BytesIO(asked.content))
    assert ds.file_meta.TransferSyntaxUID == ts.RLELossless
    np.testing.assert_array_equal(ds.pixel_array, explicit.pixels)
    lossy = uri(
        wado, explicit, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"
    )
    error(lossy, 406, "transferSyntax")


def test_rendering_parameters(wado: Archive) -> None:
    ct1 = wado["ct1"]
    got = picture(uri(wado, ct1, contentType="image/png"))
    np.testing.assert_array_equal(got, window(modality(ct1), 40, 400, "linear"))
    windowed = picture(
        uri(wado, ct1, contentType="image/png", windowCenter="0", windowWidth="1000")
    )
    np.testing.assert_array_equal(windowed, window(modality(ct1), 0, 1000, "linear"))
    assert picture(uri(wado, ct1, contentType="image/png", rows="8")).shape == (8, 8)
    assert picture(uri(wado, ct1, contentType="image/png", columns="4", rows="12")).shape == (4, 4)
    region = picture(uri(wado, ct1, contentType="image/png", region="0.25,0.5,0.75,1.0"))
    np.testing.assert_array_equal(region, window(modality(ct1), 40, 400, "linear")[8:16, 4:12])
    frames = wado["multiframe"]
    assert frames.pixels is not None
    second = picture(uri(wado, frames, contentType="image/png", frameNumber="2"))
    np.testing.assert_array_equal(second, full_range(frames.pixels[1].astype(np.float64)))
    large = wado["large"]
    low = uri(wado, large, imageQuality="5")
    high = uri(wado, large, imageQuality="100")
    assert len(low.content) < len(high.content)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"requestType": ""}, "requestType"),
        ({"requestType": "RS"}, "requestType"),
        ({"studyUID": ""}, "studyUID"),
        ({"seriesUID": "1.2.x!"}, "seriesUID"),
        ({"objectUID": "1" * 65}, "objectUID"),
        ({"windowCenter": "40"}, "windowWidth"),
        ({"windowWidth": "400"}, "windowCenter"),
        ({"windowCenter": "a", "windowWidth": "400"}, "windowCenter"),
        ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth"),
        ({"rows": "0"}, "rows"),
        ({"columns": "x"}, "columns"),
        ({"region": "0.5,0.5,0.2,0.9"}, "region"),
        ({"region": "0,0,1"}, "region"),
        ({"frameNumber": "1"}, "frameNumber"),  # not a multi-frame image
        ({"imageQuality": "101"}, "imageQuality"),
        ({"transferSyntax": "1.2.840.10008.1.2.1"}, "transferSyntax"),  # not with a JPEG
        ({"contentType": "application/dicom", "transferSyntax": "1.2!"}, "transferSyntax"),
        ({"contentType": "application/dicom", "rows": "10"}, "rows"),
        ({"anonymize": "yes"}, "anonymize"),
        ({"presentationUID": "1.2.3"}, "presentationUID"),
        ({"annotation": "patient"}, "annotation"),
        ({"contentType": "image/"}, "contentType"),
    ],
)
def test_malformed_requests_name_the_parameter(
    wado: Archive, params: dict[str, str], parameter: str
) -> None:
    response = uri(wado, wado["ct1"], **params)
    if params.get("requestType") == "":  # left out altogether
        response = httpx.get(f"{wado.root}/wado", params={"studyUID": wado["ct1"].study})
    error(response, 400, parameter)


def test_missing_objects_and_unacceptable_types(wado: Archive) -> None:
    ct1 = wado["ct1"]
    error(uri(wado, None, studyUID=ct1.study, seriesUID=ct1.series, objectUID="1.2.3.4"), 404)
    other = wado["plain"]  # an instance of another study
    error(uri(wado, None, studyUID=ct1.study, seriesUID=ct1.series, objectUID=other.sop), 404)
    error(uri(wado, ct1, contentType="image/gif"), 406, "contentType")
    by_header = httpx.get(
        f"{wado.root}/wado",
        params={"requestType": "WADO", "studyUID": ct1.study, "seriesUID": ct1.series},
        headers={"accept": "image/gif"},
    )
    error(by_header, 400, "objectUID")  # the parameters are checked first
    ok = {
        "requestType": "WADO",
        "studyUID": ct1.study,
        "seriesUID": ct1.series,
        "objectUID": ct1.sop,
    }
    error(httpx.get(f"{wado.root}/wado", params=ok, headers={"accept": "image/gif"}), 406, "Accept")
    error(uri(wado, wado["sr"], contentType="image/jpeg"), 406, "contentType")
    frames = wado["multiframe"]
    error(uri(wado, frames, contentType="image/png", frameNumber="4"), 400, "frameNumber")
