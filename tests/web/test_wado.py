"""WADO-RS against a running pypacs: instances as DICOM in the transfer syntax asked for
(PS3.18 8.7.3), metadata from the index (10.4.1.1.2), frames and bulk data (8.7.3.3)."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom import uid as ts
from pydicom.encaps import generate_frames

from wadodata import (
    ELE,
    STUDY,
    STUDY2,
    Archive,
    data_set,
    error,
    parts,
    related_type,
)

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module")
def client(wado: Archive) -> DICOMwebClient:
    return DICOMwebClient(url=wado.dicomweb)


def get(url: str, accept: str | None = None, **params: str) -> httpx.Response:
    headers = {"accept": accept} if accept is not None else {}
    return httpx.get(url, headers=headers, params=params, timeout=30)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uid_of(part_body: bytes) -> str:
    return str(dcmread(io.BytesIO(part_body), stop_before_pixels=True).SOPInstanceUID)


# -- retrieve DICOM --------------------------------------------------------------------------


def test_study_as_stored_is_byte_for_byte_in_stored_order(wado: Archive) -> None:
    response = get(f"{wado.dicomweb}/studies/{STUDY}", f"{DICOM_MULTIPART}; transfer-syntax=*")
    assert response.status_code == 200
    assert related_type(response) == "application/dicom"
    expected = wado.in_study(STUDY)
    got = parts(response)
    assert [uid_of(p.body) for p in got] == [i.sop for i in expected]
    # Bytes in are bytes out: the file kept, whose data set is the one sent.
    assert [sha256(p.body) for p in got] == [sha256(wado.blob(i)) for i in expected]
    assert [sha256(data_set(p.body)) for p in got] == [sha256(data_set(i.data)) for i in expected]
    assert [p.content_type for p in got] == [
        f"application/dicom; transfer-syntax={i.syntax}" for i in expected
    ]


def test_default_transfer_syntax_is_explicit_little_endian(
    wado: Archive, client: DICOMwebClient
) -> None:
    """PS3.18 8.7.3.4: Explicit VR Little Endian, except pixel data held only lossy."""
    series = wado["explicit"].series
    datasets = client.retrieve_series(STUDY, series)
    expected = wado.in_series(series)
    assert [str(ds.SOPInstanceUID) for ds in datasets] == [i.sop for i in expected]
    for ds, item in zip(datasets, expected, strict=True):
        if item.label == "jpeg-baseline":
            assert ds.file_meta.TransferSyntaxUID == ts.JPEGBaseline8Bit
            continue
        assert ds.file_meta.TransferSyntaxUID == ELE, item.label
        assert item.pixels is not None
        np.testing.assert_array_equal(ds.pixel_array, item.pixels, err_msg=item.label)
        # A new file meta header for the transcoded file (PS3.10 7.1).
        assert ds.file_meta.MediaStorageSOPInstanceUID == item.sop
    stored = wado.blob(wado["explicit"])
    response = get(wado.url(wado["explicit"]), DICOM_MULTIPART)
    assert [sha256(p.body) for p in parts(response)] == [sha256(stored)]  # untouched


def test_quality_values_choose_among_transfer_syntaxes(wado: Archive) -> None:
    accept = (
        f"{DICOM_MULTIPART}; transfer-syntax={ELE}; q=0.4, "
        f"{DICOM_MULTIPART}; transfer-syntax={ts.RLELossless}; q=0.9, "
        f"{DICOM_MULTIPART}; transfer-syntax={ts.JPEGBaseline8Bit}; q=1"
    )
    for label, expected in (
        ("explicit", ts.RLELossless),  # JPEG baseline would be lossy: never made
        ("jpeg-ls", ts.RLELossless),
        ("jpeg-baseline", ts.JPEGBaseline8Bit),  # as held
    ):
        item = wado[label]
        (part,) = parts(get(wado.url(item), accept))
        assert part.content_type == f"application/dicom; transfer-syntax={expected}"
        ds = dcmread(io.BytesIO(part.body))
        assert ds.file_meta.TransferSyntaxUID == expected
        if item.pixels is not None:
            np.testing.assert_array_equal(ds.pixel_array, item.pixels)


def test_wildcards_and_bare_application_dicom(wado: Archive) -> None:
    item = wado["rle"]
    for accept in ("*/*", "multipart/related", 'multipart/related; type="application/*"'):
        (part,) = parts(get(wado.url(item), accept))
        assert dcmread(io.BytesIO(part.body)).file_meta.TransferSyntaxUID == ELE, accept
    # A single Part 10 file for an instance, as held when any syntax will do.
    single = get(wado.url(item), "application/dicom; transfer-syntax=*")
    assert single.status_code == 200
    assert single.headers["content-type"] == f"application/dicom; transfer-syntax={item.syntax}"
    assert sha256(single.content) == sha256(wado.blob(item))
    message = error(get(f"{wado.dicomweb}/studies/{STUDY}", "application/dicom"), 406, "Accept")
    assert "multipart/related" in message


@pytest.mark.parametrize(
    "accept",
    [
        f"{DICOM_MULTIPART}; transfer-syntax={ts.JPEGBaseline8Bit}",  # lossy out of lossless
        f"{DICOM_MULTIPART}; transfer-syntax=1.2.3.4.5",  # not a transfer syntax
        'multipart/related; type="application/dicom+xml"',
        "application/json",
        f"{DICOM_MULTIPART}; q=0",
    ],
)
def test_nothing_acceptable_is_406(wado: Archive, accept: str) -> None:
    error(get(wado.url(wado["explicit"]), accept), 406, "Accept")


def test_some_instances_unacceptable_is_206_with_a_warning(wado: Archive) -> None:
    video, plain = wado["video"], wado["plain"]
    response = get(f"{wado.dicomweb}/studies/{STUDY2}", f"{DICOM_MULTIPART}; transfer-syntax={ELE}")
    assert response.status_code == 206
    assert video.syntax in response.headers["warning"]
    assert response.headers["warning"].startswith("299 ")
    assert [sha256(p.body) for p in parts(response)] == [sha256(wado.blob(plain))]
    # By default what pypacs cannot decode is sent as held (PS3.18 8.7.3.4).
    default = get(f"{wado.dicomweb}/studies/{STUDY2}", DICOM_MULTIPART)
    assert default.status_code == 200
    assert [sha256(p.body) for p in parts(default)] == [
        sha256(wado.blob(video)),
        sha256(wado.blob(plain)),
    ]


def test_unknown_entities_are_404_and_malformed_uids_400(wado: Archive) -> None:
    ct, other = wado["ct1"], wado["plain"]
    base = wado.dicomweb
    for url in (
        f"{base}/studies/1.2.3.999",
        f"{base}/studies/{STUDY}/series/{other.series}",  # a series of another study
        f"{base}/studies/{STUDY}/series/{ct.series}/instances/{other.sop}",
        f"{base}/studies/{STUDY}/series/{ct.series}/instances/{ct.sop}.9/metadata",
    ):
        message = error(get(url), 404)
        assert "no " in message
    error(get(f"{base}/studies/1.2.abc!"), 400, "study")
    error(get(f"{base}/studies/{STUDY}/series/1.2!/metadata"), 400, "series")
    error(get(f"{base}/studies/{STUDY}/series/{ct.series}/instances/{'1' * 65}"), 400, "instance")
    error(get(wado.url(ct), "text"), 400, "Accept")


# -- metadata --------------------------------------------------------------------------------


def expected_metadata(wado: Archive, label: str) -> dict[str, Any]:
    """The stored attributes as DICOM JSON, less pixel data and bulk data over 1024 bytes."""
    ds = dcmread(wado[label].path)
    for elem in list(ds):
        binary = elem.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN")
        if elem.tag == 0x7FE00010 or (binary and len(elem.value or b"") > 1024):
            del ds[elem.tag]
    return ds.to_json_dict()


def test_series_metadata_is_the_stored_attributes_in_order(
    wado: Archive, client: DICOMwebClient
) -> None:
    series = wado["multiframe"].series
    objects = client.retrieve_series_metadata(STUDY, series)
    items = wado.in_series(series)
    assert [o["00080018"]["Value"][0] for o in objects] == [i.sop for i in items]
    for obj, item in zip(objects, items, strict=True):
        # dicomweb-client sends a Host header without the port; the URI follows the header.
        url = obj.pop("7FE00010")
        assert url["BulkDataURI"].endswith(f"/instances/{item.sop}/bulkdata/7FE00010")
        assert obj.pop("00083002") == {"vr": "UI", "Value": [item.syntax]}
        assert obj == expected_metadata(wado, item.label), item.label
    raw = get(f"{wado.dicomweb}/studies/{STUDY}/series/{series}/metadata")
    assert raw.headers["content-type"] == "application/dicom+json"
    for item, obj in zip(items, raw.json(), strict=True):
        assert obj["7FE00010"] == {
            "vr": "OB" if ts.UID(item.syntax).is_encapsulated else "OW",
            "BulkDataURI": f"{wado.url(item)}/bulkdata/7FE00010",
        }
    for pairs in json.loads(raw.content, object_pairs_hook=lambda pairs: pairs):
        keys = [key for key, _ in pairs]
        assert keys == sorted(keys)  # PS3.18 F.2.2


def test_study_and_instance_metadata(wado: Archive, client: DICOMwebClient) -> None:
    study = client.retrieve_study_metadata(STUDY)
    items = wado.in_study(STUDY)
    assert [o["00080018"]["Value"][0] for o in study] == [i.sop for i in items]
    for obj, item in zip(study, items, strict=True):
        assert obj.pop("00083002") == {"vr": "UI", "Value": [item.syntax]}
        assert ("7FE00010" in obj) is (item.label != "sr")
        obj.pop("7FE00010", None)
        assert obj == expected_metadata(wado, item.label), item.label
    assert study[0]["00204000"] == {"vr": "LT", "Value": ['Größe {"00100010":{"vr":"PN"}} [1]']}
    sr = wado["sr"]
    obj = client.retrieve_instance_metadata(STUDY, sr.series, sr.sop)
    assert "7FE00010" not in obj  # no pixel data, no bulk data URI
    obj.pop("00083002")
    assert obj == expected_metadata(wado, "sr")
    for label in ("big-endian", "deflated", "jpeg-baseline"):
        item = wado[label]
        obj = client.retrieve_instance_metadata(STUDY, item.series, item.sop)
        obj.pop("00083002"), obj.pop("7FE00010")
        assert obj == expected_metadata(wado, label), label


def test_metadata_in_xml_is_406(wado: Archive) -> None:
    url = f"{wado.dicomweb}/studies/{STUDY}/metadata"
    error(get(url, 'multipart/related; type="application/dicom+xml"'), 406, "Accept")
    assert get(url, "application/json").status_code == 200


# -- bulk data -------------------------------------------------------------------------------


def test_pixel_data_bulk_data_uri_resolves(wado: Archive) -> None:
    for label in ("ct1", "big-endian", "multiframe", "multiframe-rle"):
        item = wado[label]
        (obj,) = get(f"{wado.url(item)}/metadata").json()
        response = get(obj["7FE00010"]["BulkDataURI"])
        assert response.status_code == 200
        assert related_type(response) == "application/octet-stream"
        (part,) = parts(response)
        assert item.pixels is not None
        assert part.body == item.pixels.astype("<u2").tobytes(), label
    rle = wado["multiframe-rle"]
    response = get(
        f"{wado.url(rle)}/bulkdata/7FE00010", 'multipart/related; type="image/dicom-rle"'
    )
    stored = dcmread(rle.path)
    assert [p.body for p in parts(response)] == list(
        generate_frames(stored.PixelData, number_of_frames=3)
    )
    assert [p.headers["Content-Location"] for p in parts(response)] == [
        f"{wado.url(rle)}/frames/{n}" for n in (1, 2, 3)
    ]


def test_other_bulk_data_by_tag(wado: Archive, client: DICOMwebClient) -> None:
    item = wado["private"]
    (part,) = client.retrieve_bulkdata(f"{wado.url(item)}/bulkdata/00291010")
    assert part == item.extra["private"]
    error(get(f"{wado.url(item)}/bulkdata/0029101"), 400, "tag")
    error(get(f"{wado.url(item)}/bulkdata/00291011"), 404)
    error(get(f"{wado.url(item)}/bulkdata/00100010"), 404)  # Patient's Name is no bulk data
    error(get(f"{wado.url(item)}/bulkdata/00291010", "image/jls"), 406, "Accept")


# -- frames ----------------------------------------------------------------------------------


def frame_bytes(pixels: np.ndarray[Any, Any]) -> list[bytes]:
    return [frame.astype("<u2").tobytes() for frame in pixels]


def test_frames_uncompressed_by_default(wado: Archive, client: DICOMwebClient) -> None:
    for label in ("multiframe", "multiframe-rle"):
        item = wado[label]
        assert item.pixels is not None
        got = client.retrieve_instance_frames(STUDY, item.series, item.sop, [3, 1])
        expected = frame_bytes(item.pixels)
        assert got == [expected[2], expected[0]], label
        response = get(f"{wado.url(item)}/frames/2")
        (part,) = parts(response)
        assert part.content_type == f"application/octet-stream; transfer-syntax={ELE}"
        assert part.headers["Content-Location"] == f"{wado.url(item)}/frames/2"
        assert part.body == expected[1]
    for label in ("jpeg-ls", "j2k", "big-endian", "deflated", "implicit"):
        item = wado[label]
        assert item.pixels is not None
        (part,) = parts(get(f"{wado.url(item)}/frames/1"))
        assert part.body == item.pixels.astype("<u2").tobytes(), label


def test_frames_as_held_when_asked(wado: Archive) -> None:
    rle = wado["multiframe-rle"]
    held = list(generate_frames(dcmread(rle.path).PixelData, number_of_frames=3))
    for accept, media in (
        ('multipart/related; type="image/dicom-rle"', "image/dicom-rle"),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', None),
        ("image/*", "image/dicom-rle"),
    ):
        response = get(f"{wado.url(rle)}/frames/2,3", accept)
        got = parts(response)
        assert [p.body for p in got] == held[1:], accept
        part_media = media or "application/octet-stream"
        assert related_type(response) == part_media
        assert got[0].content_type == f"{part_media}; transfer-syntax={ts.RLELossless}"
    jls = wado["jpeg-ls"]
    (part,) = parts(get(f"{wado.url(jls)}/frames/1", 'multipart/related; type="image/jls"'))
    assert part.body == next(generate_frames(dcmread(jls.path).PixelData, number_of_frames=1))
    # A lossy syntax held: as held when no syntax is named by a wildcard.
    baseline = wado["jpeg-baseline"]
    (part,) = parts(get(f"{wado.url(baseline)}/frames/1", "*/*"))
    assert part.content_type == f"image/jpeg; transfer-syntax={ts.JPEGBaseline8Bit}"


def test_frame_errors(wado: Archive) -> None:
    item = wado["multiframe"]
    for frames in ("0", "1,x", "1,,2", "2,2", "-1"):
        error(get(f"{wado.url(item)}/frames/{frames}"), 400, "frames")
    assert "no frame 4" in error(get(f"{wado.url(item)}/frames/1,4"), 404)
    assert "no pixel data" in error(get(f"{wado.url(wado['sr'])}/frames/1"), 404)
    error(get(f"{wado.url(wado['multiframe-rle'])}/frames/1", "image/jls"), 406, "Accept")
    error(get(f"{wado.url(wado['explicit'])}/frames/1", "image/jp2"), 406, "Accept")
