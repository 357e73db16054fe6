"""One frame of a large multi-frame instance over WADO-RS, from an S3-compatible object store
(moto_server behind a counting proxy): only its header and that frame's bytes are fetched,
the frame is exactly pydicom's, and the filesystem store answers the same."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID

from dicomgen import Spec, make_dataset, sop_uid, write_dataset
from helpers import index_rows, status_of, store_files
from s3 import Moto, Proxy
from serving import RunningServer, start_pypacs
from wadodata import error, parts

PREFIX = "site/f"
FRAMES, ROWS, COLUMNS = 40, 512, 512  # 2 bytes a pixel: 20 MiB of pixel data
ASKED = 23  # a frame from the middle, far from the header
RLE = 'multipart/related; type="image/dicom-rle"'


@dataclass(frozen=True)
class Stored:
    label: str
    path: Path
    url: str  # the instance's path under /dicom-web
    truth: Path  # the same frames in a file pydicom reads right (its offset table trusted)

    def frames(self) -> np.ndarray:
        """Every frame as pydicom decodes the whole file."""
        arr: np.ndarray = dcmread(self.truth).pixel_array
        return arr

    def held(self) -> list[bytes]:
        """Every encoded frame as pydicom splits the whole file's pixel data."""
        return list(generate_frames(dcmread(self.truth).PixelData, number_of_frames=FRAMES))


def _dataset(instance: int) -> Dataset:
    ds = make_dataset(Spec("S3FR", "Frames^Ranged", 1, 1, instance, rows=ROWS))
    rng = np.random.default_rng(instance)
    ds.PixelData = rng.integers(0, 4096, (FRAMES, ROWS, COLUMNS), dtype="<u2").tobytes()
    ds.NumberOfFrames = FRAMES
    return ds


def _url(path: Path) -> str:
    ds = dcmread(path, stop_before_pixels=True)
    return (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _offsets(frames: list[bytes]) -> list[int]:
    """PS3.5 A.4: each frame's first item from the first item after the table."""
    offsets, at = [], 0
    for frame in frames:
        offsets.append(at)
        at += 8 + len(frame)
    return offsets


def make_instances(folder: Path) -> list[Stored]:
    """Native; RLE as DCMTK writes it (with its offset table); the same RLE frames with an
    empty offset table, and with one whose offsets are 8 bytes off (found by walking the
    fragments)."""
    native = write_dataset(_dataset(1), folder)
    rle_source = write_dataset(_dataset(2), folder)
    rle = folder / "rle.dcm"
    subprocess.run(["dcmcrle", str(rle_source), str(rle)], check=True, timeout=300)
    rle_source.unlink()
    made = [Stored("native", native, _url(native), native), Stored("rle", rle, _url(rle), rle)]
    frames = list(generate_frames(dcmread(rle).PixelData, number_of_frames=FRAMES))
    assert len(frames) == FRAMES
    for instance, label, table in (
        (3, "rle-no-table", None),
        (4, "rle-table-wrong", [0] + [o + 8 for o in _offsets(frames)[1:]]),
    ):
        ds = dcmread(rle)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(
            sop_uid("S3FR", 1, 1, instance)
        )
        body = encapsulate(frames, has_bot=False)
        if table is not None:  # an offset table's item in place of the empty one
            item = struct.pack("<HHL", 0xFFFE, 0xE000, 4 * len(table))
            body = item + struct.pack(f"<{len(table)}L", *table) + body[8:]
        ds.PixelData = body
        ds["PixelData"].is_undefined_length = True
        path = write_dataset(ds, folder)
        made.append(Stored(label, path, _url(path), rle))
    return made


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> list[Stored]:
    return make_instances(tmp_path_factory.mktemp("frames"))


@pytest.fixture
def proxy(moto: Moto) -> Iterator[Proxy]:
    front = Proxy(int(moto.endpoint.rsplit(":", 1)[1]))
    yield front
    front.close()


def _store(server: RunningServer, instances: list[Stored]) -> None:
    statuses = store_files(server.dicom_port, [i.path for i in instances])
    assert {status_of(s) for s in statuses.values()} == {"0x0000"}, statuses
    assert len(index_rows(server.database_url, "instance")) == len(instances)


@pytest.fixture
def servers(
    tmp_path: Path, moto: Moto, s3_env: dict[str, str], proxy: Proxy, instances: list[Stored]
) -> Iterator[tuple[RunningServer, RunningServer]]:
    bucket = moto.new_bucket()
    s3 = start_pypacs(
        tmp_path / "s3",
        "--storage-url", f"s3://{bucket}/{PREFIX}", "--s3-endpoint-url", proxy.endpoint,
        timeout=120,
    )  # fmt: skip
    files = start_pypacs(tmp_path / "fs", timeout=120)
    try:
        _store(s3, instances)
        _store(files, instances)
        yield s3, files
    finally:
        s3.kill()
        files.kill()


def _get(server: RunningServer, path: str, accept: str | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    url = f"http://127.0.0.1:{server.http_port}{path}"
    response = httpx.get(url, headers=headers, timeout=120)
    assert response.status_code == 200, (path, response.text[:500])
    return response


def test_one_frame_fetches_only_its_header_and_that_frame(
    servers: tuple[RunningServer, RunningServer], proxy: Proxy, instances: list[Stored]
) -> None:
    s3, files = servers
    for item in instances:
        size = item.path.stat().st_size
        assert size > 20 * 1024 * 1024, item.label
        truth = item.frames()[ASKED - 1].astype("<u2").tobytes()
        path = f"{item.url}/frames/{ASKED}"

        proxy.reset_counts()
        (part,) = parts(_get(s3, path))
        fetched = proxy.downstream_bytes
        assert part.body == truth, item.label
        assert 0 < fetched < size // 4, (item.label, fetched, size)
        (same,) = parts(_get(files, path))
        assert same.body == truth, item.label

        rendered = f"{path}/rendered"
        proxy.reset_counts()
        image = _get(s3, rendered, "image/png").content
        assert 0 < proxy.downstream_bytes < size // 4, (item.label, proxy.downstream_bytes)
        assert image == _get(files, rendered, "image/png").content, item.label

        if item.label != "native":
            held = item.held()[ASKED - 1]
            proxy.reset_counts()
            (part,) = parts(_get(s3, path, RLE))
            assert part.body == held, item.label
            assert part.headers["Content-Type"].startswith("image/dicom-rle"), item.label
            assert 0 < proxy.downstream_bytes < size // 4, (item.label, proxy.downstream_bytes)
            (same,) = parts(_get(files, path, RLE))
            assert same.body == held, item.label


def test_several_frames_and_the_last_are_the_right_ones(
    servers: tuple[RunningServer, RunningServer], proxy: Proxy, instances: list[Stored]
) -> None:
    s3, files = servers
    asked = [FRAMES, 1, 17]
    for item in instances:
        frames = item.frames()
        truth = [frames[n - 1].astype("<u2").tobytes() for n in asked]
        path = f"{item.url}/frames/{','.join(map(str, asked))}"
        for server in (s3, files):
            got = [p.body for p in parts(_get(server, path))]
            assert got == truth, (item.label, server.data)
        beyond = httpx.get(
            f"http://127.0.0.1:{s3.http_port}{item.url}/frames/3,{FRAMES + 1}", timeout=120
        )
        assert f"no frame {FRAMES + 1}" in error(beyond, 404), item.label
