"""The OHIF Viewer, really installed (``pypacs viewer install``, once per machine into a
cache folder outside the repository), opened in headless Chromium on a 40-slice CT study
stored in a running pypacs: the viewport shows the image, scrolling with the mouse wheel
moves to a middle slice and changes the picture, and every request the viewer makes is
answered from under /viewer/ or /dicom-web/ without an error; the same behind the log-in
of ``[auth] mode = "local"``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import Browser, Page, Request, Response
from pydicom.dataset import Dataset

from pypacs.web.page import ohif

from dicomgen import Spec, make_dataset, uid, write_dataset
from helpers import CLI_ENV, status_of, store_files, wait_for
from serving import RunningServer, start_pypacs

ROOT = 9311  # first UID component of this set, apart from other tests' data
STUDY = uid(ROOT, 1)
SERIES = uid(ROOT, 1, 1)
SLICES = 40
SIZE = 128
# The viewport's canvas (OHIF also draws thumbnails on canvases of that class elsewhere).
VIEWPORT_CANVAS = '[data-cy="viewport-grid"] canvas.cornerstone-canvas'
LOAD_TIMEOUT = 120_000  # ms: the 17 MB app bundle and 40 frames on a busy machine
CACHE = Path(
    os.environ.get("PYPACS_TEST_VIEWER_CACHE", Path.home() / ".cache" / "pypacs-test-viewer")
)


def ct_slice(number: int) -> Dataset:
    """Slice ``number`` (1..40, 2.5 mm apart): a disc whose radius grows with the slice,
    over a horizontal ramp, so that every slice looks different."""
    ds = make_dataset(Spec("OHIF-1", "Ohif^Olga", 1, 1, number, rows=SIZE))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.SOPInstanceUID = uid(ROOT, 1, 1, number)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.FrameOfReferenceUID = uid(ROOT, 9)
    ds.ImagePositionPatient = [0.0, 0.0, 2.5 * number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 2.5
    ds.WindowCenter, ds.WindowWidth = 1200, 2400
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    radius = 8 + 1.3 * number
    disc = np.where((x - SIZE // 2) ** 2 + (y - SIZE // 2) ** 2 < radius**2, 2000, 200)
    ds.PixelData = (disc + 4 * x).astype(np.uint16).tobytes()
    return ds


@pytest.fixture(scope="session")
def viewer_root() -> Path:
    """The real viewer, installed once into the cache (a no-op when it is there)."""
    done = subprocess.run(
        [sys.executable, "-m", "pypacs", "viewer", "install", "--data", str(CACHE)],
        capture_output=True,
        text=True,
        timeout=900,
        env=CLI_ENV,
    )
    assert done.returncode == 0, done.stderr
    assert ohif.installed(CACHE / "viewer") is not None
    return CACHE / "viewer"


def serve_ct(data: Path, viewer_root: Path, *flags: str) -> RunningServer:
    data.mkdir(parents=True)
    (data / "viewer").symlink_to(viewer_root)
    folder = data.parent / "ct"
    folder.mkdir()
    files = [write_dataset(ct_slice(n), folder) for n in range(1, SLICES + 1)]
    srv = start_pypacs(data, *flags)
    try:
        refused = {p.name: status_of(s) for p, s in store_files(srv.dicom_port, files).items()}
        assert set(refused.values()) == {"0x0000"}, refused
    except BaseException:
        srv.kill()
        raise
    return srv


@dataclass
class Traffic:
    """Every request the page made, with its answer's status or its failure."""

    base: str
    answers: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("response", lambda r: self._answered(r))
        page.on("requestfailed", lambda r: self._failed(r))

    def _answered(self, response: Response) -> None:
        self.answers.append((response.status, response.url))

    def _failed(self, request: Request) -> None:
        self.failed.append((request.url, request.failure or ""))

    def check(self) -> None:
        """No request failed, all went to pypacs under /viewer/ or /dicom-web/ (the login
        page's own aside), and none was answered with an error."""
        assert self.answers, "no request seen"
        errors = [(status, url) for status, url in self.answers if status >= 400]
        assert errors == []
        assert self.failed == []
        elsewhere = [
            url
            for _, url in self.answers
            if not url.startswith(self.base)
            or not urlsplit(url).path.startswith(("/viewer/", "/dicom-web/", "/login"))
        ]
        assert elsewhere == []
        paths = [urlsplit(url).path for _, url in self.answers]
        frames = [
            p for p in paths if p.startswith(f"/dicom-web/studies/{STUDY}/") and "/frames/" in p
        ]
        assert frames, "no frame was fetched"


def open_study(page: Page, base: str) -> Image.Image:
    """Open the study in the viewer, dismiss what covers the viewport; its picture."""
    page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={STUDY}", timeout=LOAD_TIMEOUT)
    page.locator(VIEWPORT_CANVAS).wait_for(timeout=LOAD_TIMEOUT)
    # OHIF's first-visit tour and notice lie over the viewport.
    for label in ("Skip all", "Confirm and hide"):
        button = page.get_by_text(label, exact=True)
        button.wait_for(timeout=LOAD_TIMEOUT)
        button.click()
        button.wait_for(state="hidden", timeout=LOAD_TIMEOUT)
    slice_shown(page, 1)
    shown: Image.Image = wait_for(
        lambda: picture(page), timeout=LOAD_TIMEOUT / 1000, what="an image"
    )
    return shown


def picture(page: Page) -> Image.Image | None:
    """The viewport's canvas as shown, when it holds an image (not blank)."""
    shot = page.locator(VIEWPORT_CANVAS).screenshot()
    image = Image.open(io.BytesIO(shot)).convert("L")
    variance = ImageStat.Stat(image).var[0]
    return image if variance > 500 else None


def slice_shown(page: Page, index: int) -> None:
    """Wait for the viewport's overlay to say it shows slice ``index`` of 40."""
    # "I:<instance number> (<index>/<count>)" in the viewport's corner.
    text = re.compile(rf"I:\s*\d+\s*\({index}/{SLICES}\)")
    page.get_by_text(text).first.wait_for(timeout=LOAD_TIMEOUT)


def scroll_to_middle(page: Page) -> None:
    box = page.locator(VIEWPORT_CANVAS).bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(SLICES // 2 - 1):  # one slice per wheel step
        page.mouse.wheel(0, 120)
    slice_shown(page, SLICES // 2)


def bright(image: Image.Image) -> float:
    """The share of the picture's pixels in the disc (its grey is far above the ramp's)."""
    pixels = np.asarray(image)
    return float((pixels > 200).mean())


def disc_share(image: Image.Image, number: int) -> float:
    side = min(image.size)  # the square image, scaled to the viewport's height
    radius = (8 + 1.3 * number) * side / SIZE
    return float(np.pi * radius**2 / (image.width * image.height))


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


def view_and_scroll(page: Page, base: str, tmp_path: Path) -> None:
    first = open_study(page, base)
    first.save(tmp_path / "first.png")
    scroll_to_middle(page)
    middle = wait_for(
        lambda: (shown := picture(page)) and difference(shown, first) > 5 and shown,
        timeout=LOAD_TIMEOUT / 1000,
        what="the middle slice",
    )
    middle.save(tmp_path / "middle.png")
    # The disc covers the share of the viewport its slice's radius says (the image fills the
    # viewport's height): slice 40 shown first, then slice 21 (the 20th from the top).
    assert abs(bright(first) - disc_share(first, SLICES)) < 0.06
    assert abs(bright(middle) - disc_share(middle, SLICES // 2 + 1)) < 0.06
    print(f"screenshots: {tmp_path}")


def test_the_viewer_shows_the_study_and_scrolls(
    browser: Browser, viewer_root: Path, tmp_path: Path
) -> None:
    srv = serve_ct(tmp_path / "data", viewer_root)
    base = f"http://127.0.0.1:{srv.http_port}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    traffic = Traffic(base)
    traffic.watch(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        view_and_scroll(page, base, tmp_path)
        # OHIF's decoders need SharedArrayBuffer: the page is cross-origin isolated.
        assert page.evaluate("crossOriginIsolated") is True
    finally:
        context.close()
        srv.kill()
    traffic.check()
    assert errors == []


def test_the_viewer_behind_the_log_in(browser: Browser, viewer_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "pypacs.toml"
    config.write_text(f'[auth]\nmode = "local"\n[storage]\npath = "{data}"\n')
    srv = serve_ct(data, viewer_root, "--config", str(config))
    base = f"http://127.0.0.1:{srv.http_port}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    traffic = Traffic(base)
    try:
        added = subprocess.run(
            [sys.executable, "-m", "pypacs", "user", "add", "rita", "--role", "reader",
             "--password-stdin", "--config", str(config)],
            input="rita-password\n", capture_output=True, text=True, timeout=120, env=CLI_ENV,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # Without a session the viewer's page sends the browser to log in.
        page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={STUDY}", timeout=LOAD_TIMEOUT)
        assert urlsplit(page.url).path == "/login"
        page.fill("#login-name", "rita")
        page.fill("#login-password", "rita-password")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/", timeout=LOAD_TIMEOUT)
        # Logged in: the session cookie rides along with every fetch of the viewer (a tab
        # of its own, apart from what the web page fetches).
        viewer = context.new_page()
        traffic.watch(viewer)
        view_and_scroll(viewer, base, tmp_path)
    finally:
        context.close()
        srv.kill()
    traffic.check()
