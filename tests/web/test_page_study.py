"""The web page's study, tags and upload views in headless Chromium against a running
pypacs: the tag view shows the patient name and finds a tag by search, an uploaded file
appears in the studies list with its result, a deleted study disappears after confirming,
a series' images open in the series viewer (viewer.js) on the study page."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from webpage import opened

from dicomgen import Spec, make_dataset, write_dataset
from findfixtures import serve_datasets
from serving import RunningServer
from viewerdata import STUDY as VIEWER_STUDY
from viewerdata import ct_slice, series_uid, us_multiframe

TIMEOUT = 30_000  # ms: generous, the machine is shared
DATASETS = [
    make_dataset(Spec("TAG-1", "Tagged^Tess", 1, 1, 1, study_date="20240301")),
    make_dataset(Spec("DEL-1", "Doomed^Dan", 1, 1, 1, modality="MR")),
]
CT_SLICES = 12
VIEWER_SET = [*(ct_slice(n) for n in range(1, CT_SLICES + 1)), us_multiframe()]
NEW = make_dataset(Spec("UP-1", "Uploaded^Uma", 1, 1, 1, study_date="20240402"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "page-study", datasets=[*DATASETS, *VIEWER_SET])
    yield srv
    srv.kill()


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    yield from opened(
        browser, f"http://127.0.0.1:{server.http_port}/", viewport={"width": 1280, "height": 900}
    )


def shown(page: Page) -> list[str]:
    rows: list[str] = page.locator("#studies-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.study)"
    )
    return rows


def test_the_tag_view_shows_the_patient_name_and_finds_a_tag(page: Page) -> None:
    ds = DATASETS[0]
    study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), ds.SOPInstanceUID)
    page.goto(page.url.split("#")[0] + f"#/tags/{study}/{series}/{sop}")
    row = page.locator("#tags-table tbody tr", has_text="(0010,0010)")
    expect(row).to_be_visible()
    assert row.locator("td").all_inner_texts() == [
        "(0010,0010)",
        "PatientName",
        "PN",
        "Tagged, Tess",
    ]
    page.fill("#tags-search", "0020,000d")
    visible = page.locator("#tags-table tbody tr:visible")
    expect(visible).to_have_count(1)
    assert visible.locator("td").all_inner_texts()[1:] == ["StudyInstanceUID", "UI", study]
    expect(page.locator("#tags-status")).to_have_text("1 attribute matches.")
    page.fill("#tags-search", "no such thing")
    expect(page.locator("#tags-status")).to_have_text("No attribute matches.")


def test_an_uploaded_file_appears_in_the_studies_list(page: Page, tmp_path: Path) -> None:
    good = write_dataset(NEW, tmp_path)
    bad = tmp_path / "notes.txt"
    bad.write_text("not DICOM")
    page.click("#site-nav a[data-view=upload]")
    page.set_input_files("#upload-files", [str(good), str(bad)])
    expect(page.locator("#upload-status")).to_have_text("1 file stored, 1 file failed.")
    results: dict[str, str] = {}
    for row in page.locator("#upload-results tbody tr").all():
        name, result = row.locator("td").all_inner_texts()
        results[name] = result
    assert results[good.name] == "stored"
    assert results["notes.txt"].startswith("failed: ")
    page.click("#site-nav a[data-view=studies]")
    page.fill("#patient-id", "UP-1")
    page.click("#search-button")
    expect(page.locator("#studies-status")).to_have_text("1 study found.")
    assert shown(page) == [str(NEW.StudyInstanceUID)]


def test_a_deleted_study_disappears_after_confirming(page: Page) -> None:
    uid = str(DATASETS[1].StudyInstanceUID)
    page.fill("#patient-id", "DEL-1")
    page.click("#search-button")
    expect(page.locator("#studies-status")).to_have_text("1 study found.")
    page.locator(f'#studies-table tr[data-study="{uid}"] a').click()
    expect(page.locator("#delete-study")).to_be_visible()
    page.click("#delete-study")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-cancel")  # nothing happens without confirming
    expect(page.locator("#confirm")).to_be_hidden()
    page.click("#delete-study")
    page.click("#confirm-delete")
    expect(page.locator("#view-studies")).to_be_visible()
    page.fill("#patient-id", "DEL-1")
    page.click("#search-button")
    expect(page.locator("#studies-status")).to_have_text("No study found.")


def open_images(page: Page, series: str) -> Locator:
    """Open the viewer study's page, press a series' Images; the place its viewer mounts."""
    page.goto(page.url.split("#")[0] + f"#/study/{VIEWER_STUDY}")
    expect(page.locator("#series tbody tr")).to_have_count(2)
    page.locator(f'#series tr[data-series="{series}"] button', has_text="Images").click()
    return page.locator(f'.series-view[data-series="{series}"]')


def test_a_series_opens_in_the_viewer_on_the_study_page(page: Page) -> None:
    view = open_images(page, series_uid(1))
    # viewer.js mounted, not the list of images it falls back to.
    image = view.locator(".viewer-mount .pv-viewer .pv-stage img.pv-image")
    expect(image).to_have_attribute("data-index", "0", timeout=TIMEOUT)
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    assert view.locator("table.instances").count() == 0
    counter = view.locator(".pv-counter")
    expect(counter).to_have_text(f"1 / {CT_SLICES}")
    box = image.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    pixels = Image.open(io.BytesIO(image.screenshot())).convert("L")
    low, high = cast(tuple[int, int], pixels.getextrema())  # one band
    assert high - low > 100, "a flat image"
    # The keys move through the slices; the tags link follows the image shown.
    view.locator(".pv-viewer").focus()
    page.keyboard.press("End")
    expect(counter).to_have_text(f"{CT_SLICES} / {CT_SLICES}", timeout=TIMEOUT)
    last = str(VIEWER_SET[CT_SLICES - 1].SOPInstanceUID)
    tags = view.locator(".tags-link a")
    expect(tags).to_have_attribute(
        "href", f"#/tags/{VIEWER_STUDY}/{series_uid(1)}/{last}", timeout=TIMEOUT
    )
    tags.click()
    expect(page.locator("#tags-uid")).to_have_text(last)


def test_a_multiframe_image_shows_its_frames_in_the_page_viewer(page: Page) -> None:
    # The study page passes each instance's Number of Frames on to the viewer.
    view = open_images(page, series_uid(2))
    counter = view.locator(".pv-counter")
    expect(counter).to_have_text("1 / 1 \N{MIDDLE DOT} frame 1 / 8", timeout=TIMEOUT)
    expect(view.locator(".pv-play")).to_be_visible()
    view.locator(".pv-viewer").focus()
    page.keyboard.press("ArrowDown")
    expect(counter).to_have_text("1 / 1 \N{MIDDLE DOT} frame 2 / 8", timeout=TIMEOUT)
