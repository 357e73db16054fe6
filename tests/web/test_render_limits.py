"""Rendering bounded under abuse, against a running pypacs: a huge frame is refused from its
header before it is decoded (413 naming [web] render_max_frame_bytes), renders together hold
no more than [web] render_max_bytes_in_flight, the viewport has a largest side, a region
outside the image is refused, thumbnails are kept once made, and normal images still render.
Memory is the server process's peak resident set (VmHWM)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from dicomgen import Spec, make_dataset
from helpers import blob_path, index_rows
from memory import MB, peak_rss
from serving import RunningServer, start_pypacs

BOUNDARY = "pypacs-render-limits"
SIDE = 8192  # 8192 x 8192 x 16 bits: 128 MiB decoded, 2 MiB as RLE


def instance(number: int, rows: int, pixels: np.ndarray[Any, Any] | None = None) -> Dataset:
    ds = make_dataset(Spec("RENDER", "Render^Limits", 1, 1, number, rows=rows))
    if pixels is not None:
        ds.BitsStored, ds.HighBit = 16, 15
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    return ds


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(srv: RunningServer, *datasets: Dataset) -> None:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(ds) + b"\r\n"
        for ds in datasets
    )
    response = httpx.post(
        f"http://127.0.0.1:{srv.http_port}/dicom-web/studies",
        content=body + f"--{BOUNDARY}--\r\n".encode(),
        headers={
            "content-type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text


def url(srv: RunningServer, ds: Dataset) -> str:
    return (
        f"http://127.0.0.1:{srv.http_port}/dicom-web/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def get(address: str, **params: str) -> httpx.Response:
    return httpx.get(address, params=params, headers={"accept": "image/png"}, timeout=120)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["status"] == status
    return body


def png(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as img:
        assert img.format == "PNG"
        return np.asarray(img)


@pytest.fixture(scope="module")
def huge() -> Dataset:
    """8192 x 8192, 16 bits, mostly one value: a 2 MiB upload that decodes to 128 MiB."""
    pixels = np.full((SIDE, SIDE), 100, np.uint16)
    pixels[1000:3000, 2000:6000] = 3000
    return instance(2, SIDE, pixels)


@pytest.fixture(scope="module")
def small() -> Dataset:
    return instance(1, 8)


@pytest.fixture(scope="module")
def pacs(
    tmp_path_factory: pytest.TempPathFactory, huge: Dataset, small: Dataset
) -> Iterator[RunningServer]:
    """Default settings: 64 MiB of decoded frame at most."""
    srv = start_pypacs(tmp_path_factory.mktemp("render-limits") / "data")
    stow(srv, small, huge)
    yield srv
    srv.kill()


def test_a_frame_past_the_limit_is_413_before_it_is_decoded(
    pacs: RunningServer, huge: Dataset
) -> None:
    before = peak_rss(pacs.proc.pid)
    for suffix in ("thumbnail", "rendered", "frames/1/rendered"):
        body = error(get(f"{url(pacs, huge)}/{suffix}"), 413)
        assert body["code"] == "too-large"
        assert "[web] render_max_frame_bytes" in body["message"]
        assert f"{SIDE}x{SIDE}" in body["message"]
    wado = f"http://127.0.0.1:{pacs.http_port}/wado"
    params = {
        "requestType": "WADO",
        "studyUID": huge.StudyInstanceUID,
        "seriesUID": huge.SeriesInstanceUID,
        "objectUID": huge.SOPInstanceUID,
        "contentType": "image/png",
    }
    assert "render_max_frame_bytes" in error(get(wado, **params), 413)["message"]
    # Nothing was decoded: the 128 MiB frame never came into memory.
    assert peak_rss(pacs.proc.pid) - before < 40 * MB


def test_the_viewport_has_a_largest_side(pacs: RunningServer, small: Dataset) -> None:
    for suffix in ("rendered", "thumbnail"):
        for viewport in ("40000,40000", "4097,10", "10,4097"):
            body = error(get(f"{url(pacs, small)}/{suffix}", viewport=viewport), 400)
            assert body["parameter"] == "viewport"
            assert "4096" in body["message"]
    wado = f"http://127.0.0.1:{pacs.http_port}/wado"
    params = {
        "requestType": "WADO",
        "studyUID": small.StudyInstanceUID,
        "seriesUID": small.SeriesInstanceUID,
        "objectUID": small.SOPInstanceUID,
        "contentType": "image/png",
    }
    for name in ("rows", "columns"):
        assert error(get(wado, **params, **{name: "40000"}), 400)["parameter"] == name
    # The largest side is still rendered; the side left out follows within it.
    assert png(get(wado, **params, rows="64")).shape == (64, 64)


def test_a_source_region_outside_the_image_is_400(pacs: RunningServer, small: Dataset) -> None:
    for viewport in ("4,4,0,0,100000,100000", "4,4,6,6,4,4", "4,4,2,2,-4,2"):
        body = error(get(f"{url(pacs, small)}/rendered", viewport=viewport), 400)
        assert body["parameter"] == "viewport"
        assert "8x8 image" in body["message"]


def test_a_normal_image_still_renders(pacs: RunningServer, small: Dataset) -> None:
    stored = np.frombuffer(small.PixelData, np.uint16).reshape(8, 8).astype(np.float64)
    expected = np.rint((stored - stored.min()) / (stored.max() - stored.min()) * 255)
    np.testing.assert_array_equal(png(get(f"{url(pacs, small)}/rendered")), expected)
    np.testing.assert_array_equal(png(get(f"{url(pacs, small)}/thumbnail")), expected)
    assert png(get(f"{url(pacs, small)}/rendered", viewport="4096,4096")).shape == (4096, 4096)


def test_renders_within_the_limits_and_four_at_once_hold_one_budget(
    tmp_path: Path, huge: Dataset
) -> None:
    """With room for the huge frame, but for one of them at a time: it renders, and four
    thumbnails asked for at once do not take four times the memory (each waits its turn
    or is answered 503)."""
    config = tmp_path / "pypacs.toml"
    config.write_text(
        "[web]\nrender_max_frame_bytes = 134217728\nrender_max_bytes_in_flight = 134217728\n"
    )
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    try:
        stow(srv, huge)
        before = peak_rss(srv.proc.pid)
        thumbnail = png(get(f"{url(srv, huge)}/thumbnail"))
        assert thumbnail.shape == (128, 128)
        assert thumbnail[0, 0] == 0 and thumbnail[40, 64] == 255  # the bright block
        one = peak_rss(srv.proc.pid) - before
        # The frame decoded is 128 MiB; before, one such thumbnail took 673 MB.
        assert one < 400 * MB, f"one render grew the server by {one / MB:.0f} MB"

        statuses: list[int] = []

        def ask(size: int) -> None:
            response = get(f"{url(srv, huge)}/thumbnail", viewport=f"{size},{size}")
            statuses.append(response.status_code)

        threads = [threading.Thread(target=ask, args=(60 + n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(set(statuses)) in ([200], [200, 503], [503])
        assert 200 in statuses
        four = peak_rss(srv.proc.pid) - before
        assert four < one + 100 * MB, f"four renders grew it by {four / MB:.0f} MB"
    finally:
        srv.kill()


def test_a_thumbnail_is_kept_once_made(tmp_path: Path, small: Dataset) -> None:
    srv = start_pypacs(tmp_path / "data")
    try:
        stow(srv, small)
        first = get(f"{url(srv, small)}/thumbnail")
        assert first.status_code == 200
        # The stored file goes: the same thumbnail is still answered, from memory ...
        (row,) = index_rows(srv.database_url, "instance")
        blob_path(srv.data, row["blob_key"]).unlink()
        again = get(f"{url(srv, small)}/thumbnail")
        assert again.status_code == 200
        assert again.content == first.content
        # ... and one not made before needs the file.
        assert get(f"{url(srv, small)}/thumbnail", viewport="4,4").status_code >= 500
    finally:
        srv.kill()
