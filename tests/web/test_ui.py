"""The web page in a real headless Chromium (Playwright) against a running pypacs holding
the C-FIND fixture set and a study of larger images: search by each field, a study's
series with their thumbnails, one image full size, the study as a ZIP, and sending it to a
storage SCP. Screenshots go to the test's tmp_path and are checked, not only taken."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)
from pydicom.dataset import Dataset

from webpage import opened

from dicomgen import Spec, make_dataset
from findfixtures import PATIENTS, SERIES_UID, STUDY, STUDY_UID, fixture_datasets, serve_datasets
from helpers import blob_path, index_rows
from receiver import Receiver, config_file, receiver
from serving import RunningServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PAGE_SIZE = 50  # studies a page of results shows (lists.js)
DASH = "\N{EN DASH}"

# A study of images large enough to look at: CT series 1 (2 instances), MR series 2 (1).
VIEW_SPECS = (
    Spec("UI-VIEW", "Viewer^Vera", 1, 1, 1, rows=64, study_date="20230601"),
    Spec("UI-VIEW", "Viewer^Vera", 1, 1, 2, rows=64, study_date="20230601"),
    Spec("UI-VIEW", "Viewer^Vera", 1, 2, 1, modality="MR", rows=64, study_date="20230601"),
)
VIEW = tuple(make_dataset(spec) for spec in VIEW_SPECS)
VIEW_STUDY = str(VIEW[0].StudyInstanceUID)
VIEW_UIDS = {str(ds.SOPInstanceUID) for ds in VIEW}


@dataclass(frozen=True)
class StudyFacts:
    """What a search can match on, written from the definitions, not read from pypacs."""

    uid: str
    patient_id: str
    patient_name: str
    date: str
    accession: str
    modalities: frozenset[str]


def _facts() -> list[StudyFacts]:
    facts = [
        StudyFacts(
            STUDY_UID[study.label],
            patient.patient_id,
            patient.name,
            study.date,
            study.accession,
            frozenset(s.modality for s in study.series),
        )
        for patient in PATIENTS
        for study in patient.studies
    ]
    first = VIEW[0]
    facts.append(
        StudyFacts(
            VIEW_STUDY,
            str(first.PatientID),
            str(first.PatientName),
            str(first.StudyDate),
            str(first.AccessionNumber),
            frozenset(str(ds.Modality) for ds in VIEW),
        )
    )
    return facts


STUDIES = _facts()


def studies_where(test: Callable[[StudyFacts], bool]) -> list[str]:
    return sorted(s.uid for s in STUDIES if test(s))


def all_datasets() -> list[Dataset]:
    return [*fixture_datasets(), *VIEW]


@dataclass
class Pacs:
    server: RunningServer
    dest: Receiver

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/"

    def blobs_by_uid(self) -> dict[str, bytes]:
        rows = index_rows(self.server.database_url, "instance")
        return {
            row["sop_instance_uid"]: blob_path(self.server.data, row["blob_key"]).read_bytes()
            for row in rows
        }


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    with receiver(ae_title="DEST") as dest:
        config = config_file(tmp_path_factory.mktemp("ui-config"), [dest])
        srv = serve_datasets(
            tmp_path_factory, "ui", "--config", str(config), datasets=all_datasets()
        )
        try:
            yield Pacs(srv, dest)
        finally:
            srv.kill()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, pacs: Pacs) -> Iterator[Page]:
    yield from opened(browser, pacs.url, viewport=VIEWPORT, accept_downloads=True)


# -- checking screenshots ---------------------------------------------------------------------


def screenshot(page: Page, path: Path) -> Image.Image:
    """Take a screenshot of the viewport to ``path`` and check it is a real picture."""
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
    assert_not_blank(image)
    return image


def assert_not_blank(image: Image.Image) -> None:
    grey = image.convert("L")
    low, high = cast(tuple[int, int], grey.getextrema())  # one band
    assert high - low > 100, f"flat image: grey levels {low}..{high}"
    assert len(grey.getcolors(maxcolors=256 * 256) or ()) > 8


def region(page: Page, image: Image.Image, selector: str) -> Image.Image:
    """The part of a viewport screenshot that ``selector`` covers."""
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["width"] > 0
    assert box["height"] > 0
    right = min(box["x"] + box["width"], image.width)
    bottom = min(box["y"] + box["height"], image.height)
    return image.crop((int(box["x"]), int(box["y"]), int(right), int(bottom)))


def dark_pixels(image: Image.Image) -> int:
    histogram = image.convert("L").histogram()
    return sum(histogram[:96])


# -- the page's parts -----------------------------------------------------------------------


def search(page: Page, **fields: str) -> str:
    """Fill in the search form (ids as keys), press Search; the QIDO-RS URL it asked."""
    for field in ("patient_name", "patient_id", "date_from", "date_to", "modality", "accession"):
        page.fill(f"#{field.replace('_', '-')}", fields.get(field, ""))
    with page.expect_response(lambda r: "/dicom-web/studies?" in r.url) as answer:
        page.click("#search-button")
    expect(page.locator("#studies-status")).not_to_have_text("Searching…")
    return answer.value.url


def shown_studies(page: Page) -> list[str]:
    uids: list[str] = page.locator("#studies-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.study)"
    )
    return sorted(uids)


def column(page: Page, table: str, index: int) -> list[str]:
    texts: list[str] = page.locator(f"{table} tbody tr td:nth-child({index})").all_inner_texts()
    return texts


def open_study(page: Page, uid: str) -> None:
    search(page, patient_id=next(s.patient_id for s in STUDIES if s.uid == uid))
    page.locator(f'#studies-table tr[data-study="{uid}"] a').click()
    expect(page.locator("#view-study")).to_be_visible()


def thumbnails_loaded(page: Page) -> dict[str, int]:
    """naturalWidth of each series' thumbnail, once every one has loaded or failed."""
    page.wait_for_function(
        "() => { const rows = document.querySelectorAll('#series tbody tr');"
        " return rows.length > 0 && [...rows].every(r => !r.querySelector('img')"
        " || r.querySelector('img').complete); }"
    )
    widths: dict[str, int] = page.locator("#series tbody tr").evaluate_all(
        "rows => Object.fromEntries(rows.map(r => [r.dataset.series,"
        " r.querySelector('img') ? r.querySelector('img').naturalWidth : 0]))"
    )
    return widths


# -- the scenarios --------------------------------------------------------------------------


SEARCHES: dict[str, tuple[dict[str, str], tuple[str, str], Callable[[StudyFacts], bool]]] = {
    # A name is a prefix search, case-insensitive (PN matching as configured by default).
    "patient name": (
        {"patient_name": "smith"},
        ("PatientName", "smith*"),
        lambda s: s.patient_name.upper().startswith("SMITH"),
    ),
    "patient ID": (
        {"patient_id": "PAT-JANE"},
        ("PatientID", "PAT-JANE"),
        lambda s: s.patient_id == "PAT-JANE",
    ),
    "study date range": (
        {"date_from": "2024-01-10", "date_to": "2024-01-16"},
        ("StudyDate", "20240110-20240116"),
        lambda s: "20240110" <= s.date <= "20240116",
    ),
    "modality": ({"modality": "mr"}, ("ModalitiesInStudy", "MR"), lambda s: "MR" in s.modalities),
    "accession number": (
        {"accession": "ACC-J2"},
        ("AccessionNumber", "ACC-J2"),
        lambda s: s.accession == "ACC-J2",
    ),
}


@pytest.mark.parametrize("case", SEARCHES)
def test_search_by_each_field(page: Page, case: str) -> None:
    fields, (key, value), matches = SEARCHES[case]
    params = parse_qs(urlsplit(search(page, **fields)).query)
    # Only the field filled in is sent, with what pypacs should match, and the first page.
    paging = {"limit": [str(PAGE_SIZE)], "offset": ["0"], "total": ["true"]}
    assert {k: v for k, v in params.items() if k != "includefield"} == {key: [value], **paging}
    expected = studies_where(matches)
    assert len(expected) >= 1
    assert shown_studies(page) == expected
    noun = "study" if len(expected) == 1 else "studies"
    expect(page.locator("#studies-status")).to_have_text(f"{len(expected)} {noun} found.")
    by_uid = {s.uid: s for s in STUDIES}
    rows = page.locator("#studies-table tbody tr")
    for i in range(rows.count()):
        row = rows.nth(i)
        facts = by_uid[row.get_attribute("data-study") or ""]
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == facts.patient_id
        assert cells[2] == f"{facts.date[:4]}-{facts.date[4:6]}-{facts.date[6:]}"
        assert set(cells[4].split()) == set(facts.modalities)
        assert cells[5] == facts.accession


def test_search_results_screenshot(page: Page, tmp_path: Path) -> None:
    search(page, patient_name="smith")
    image = screenshot(page, tmp_path / "results.png")
    table = region(page, image, "#studies-table")
    assert_not_blank(table)
    # The rows' text is there: dark pixels in the table's part of the picture.
    assert dark_pixels(table) > 500
    assert sorted(column(page, "#studies-table", 1)) == [
        "SMITH, JANE",
        "SMITH, JANE",
        "Smith, John",
        "Smith, John",
        "smithers, bob",
    ]


def test_the_archive_page_shows_the_counts(page: Page) -> None:
    datasets = all_datasets()
    page.click("#site-nav a[data-view=archive]")
    expect(page.locator("#stat-instances")).to_have_text(str(len(datasets)))
    assert page.locator("#stat-patients").inner_text() == str(
        len({str(d.PatientID) for d in datasets})
    )
    assert page.locator("#stat-studies").inner_text() == str(
        len({str(d.StudyInstanceUID) for d in datasets})
    )
    assert page.locator("#stat-series").inner_text() == str(
        len({str(d.SeriesInstanceUID) for d in datasets})
    )
    # Stored when the module started: within the last day's chart.
    page.select_option("#ingest-span", "day")
    expect(page.locator("#ingest-summary")).to_have_text(
        f"{len(datasets)} instances received over the last 24 hours."
    )
    assert page.locator("#ingest-chart svg rect").count() == 24


def test_open_a_study_shows_its_series_and_thumbnails(page: Page, tmp_path: Path) -> None:
    open_study(page, STUDY_UID["john1"])
    expect(page.locator("#series tbody tr")).to_have_count(3)
    rows = [
        page.locator("#series tbody tr").nth(i).locator("td").all_inner_texts()[1:5]
        for i in range(3)
    ]
    assert rows == [
        [str(n), s.modality, s.description, str(s.instances)]
        for n, s in enumerate(STUDY["john1"].series, start=1)
    ]
    widths = thumbnails_loaded(page)
    # The CT and MR series have pixels: their thumbnails loaded.
    assert widths[SERIES_UID["john1/1"]] > 0
    assert widths[SERIES_UID["john1/2"]] > 0
    summary = page.locator("#study-summary").inner_text()
    assert "2024-01-01" in summary
    assert STUDY_UID["john1"] in summary
    image = screenshot(page, tmp_path / "study.png")
    assert_not_blank(region(page, image, "#study-heading"))


def test_each_series_has_a_place_for_its_images(page: Page) -> None:
    open_study(page, VIEW_STUDY)
    expect(page.locator("#series tbody tr")).to_have_count(2)
    widths = thumbnails_loaded(page)
    assert set(widths) == {str(ds.SeriesInstanceUID) for ds in VIEW}
    assert all(width > 0 for width in widths.values())
    views = page.locator("#series-views .series-view")
    assert views.evaluate_all("s => s.map(v => v.dataset.series)") == [
        str(VIEW[0].SeriesInstanceUID),
        str(VIEW[2].SeriesInstanceUID),
    ]
    ct_series = str(VIEW[0].SeriesInstanceUID)
    page.locator(f'#series tr[data-series="{ct_series}"] button', has_text="Images").click()
    mount = page.locator(f'.series-view[data-series="{ct_series}"] .viewer-mount')
    expect(mount).to_be_visible()
    # The viewer module (viewer.js) or, without it, the list of images fills the mount.
    expect(mount.locator("*").first).to_be_attached()


def test_download_the_study_as_zip(page: Page, pacs: Pacs, tmp_path: Path) -> None:
    open_study(page, VIEW_STUDY)
    with page.expect_download() as download_info:
        page.click("#download-zip")
    download = download_info.value
    assert download.suggested_filename == f"{VIEW_STUDY}.zip"
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    blobs = pacs.blobs_by_uid()
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert len(names) == 3
        by_uid = {name.split("_", 1)[1].removesuffix(".dcm"): name for name in names}
        assert set(by_uid) == VIEW_UIDS
        for uid, name in by_uid.items():
            assert archive.read(name) == blobs[uid]


def test_send_the_study_to_a_remote(page: Page, pacs: Pacs, tmp_path: Path) -> None:
    pacs.dest.received.clear()
    open_study(page, VIEW_STUDY)
    options: list[str] = page.locator("#remote option").all_inner_texts()
    assert options == [f"dest (DEST at 127.0.0.1:{pacs.dest.port})"]
    page.select_option("#remote", "dest")
    with page.expect_response(lambda r: r.url.endswith("/api/remotes/dest/move")) as answer:
        page.click("#send-button")
    assert answer.value.status == 202
    progress = page.locator("#send-progress")
    expect(progress).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator("#send-status")).to_have_text("Done: 3 sent, 0 failed, 0 with warnings.")
    values: Any = progress.evaluate("p => [p.value, p.max]")
    assert values == [3, 3]
    assert {r.sop_instance_uid for r in pacs.dest.received} == VIEW_UIDS
    assert len(pacs.dest.received) == 3
    image = screenshot(page, tmp_path / "sent.png")
    assert_not_blank(region(page, image, "#send-progress-box"))


def test_echo_from_the_page(page: Page, pacs: Pacs) -> None:
    open_study(page, VIEW_STUDY)
    page.click("#echo-button")
    # The storage receiver accepts the association but no Verification context: the page
    # says so (PS3.8 9.3.3.2, the context's result is "abstract syntax not supported").
    expect(page.locator("#send-status")).to_have_text(
        f"dest did not answer: DEST at 127.0.0.1:{pacs.dest.port} does not offer Verification"
    )
    expect(page.locator("#send-status")).to_have_class("error")


# -- paging through many studies -----------------------------------------------------------

# More studies than two pages: names and dates in another order than arrival, so that a
# sort shows.
PAGED_COUNT = 2 * PAGE_SIZE + 23


def _paged_spec(n: int) -> Spec:
    return Spec(
        f"PAGE-{n:03d}",
        f"Pager^{(n * 37) % PAGED_COUNT:03d}",
        1,
        1,
        1,
        study_date=f"2023{1 + (n * 7) % 12:02d}{1 + (n * 11) % 28:02d}",
    )


PAGED = [make_dataset(_paged_spec(n)) for n in range(PAGED_COUNT)]


def _facts_of(ds: Dataset) -> StudyFacts:
    return StudyFacts(
        str(ds.StudyInstanceUID),
        str(ds.PatientID),
        str(ds.PatientName),
        str(ds.StudyDate),
        str(ds.AccessionNumber),
        frozenset({str(ds.Modality)}),
    )


PAGED_FACTS = [_facts_of(ds) for ds in PAGED]  # in arrival order


def _browser_page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    yield from opened(browser, f"http://127.0.0.1:{server.http_port}/", viewport=VIEWPORT)


@pytest.fixture(scope="module")
def paged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Stored in this order over one association: the archive's arrival order.
    srv = serve_datasets(tmp_path_factory, "ui-paged", datasets=PAGED)
    yield srv
    srv.kill()


@pytest.fixture
def paged(browser: Browser, paged_server: RunningServer) -> Iterator[Page]:
    yield from _browser_page(browser, paged_server)


def page_rows(page: Page) -> list[str]:
    """The Study Instance UIDs of the rows shown, top to bottom."""
    uids: list[str] = page.locator("#studies-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.study)"
    )
    return uids


def go(page: Page, button: str, offset: int) -> None:
    """Press Next or Previous and wait for the page it asks for."""
    with page.expect_response(lambda r: "/dicom-web/studies?" in r.url) as answer:
        page.click(button)
    params = parse_qs(urlsplit(answer.value.url).query)
    assert (params["limit"], params["offset"]) == ([str(PAGE_SIZE)], [str(offset)])
    expect(page.locator("#studies-status")).to_contain_text(f"Showing {offset + 1}{DASH}")


def uids(facts: list[StudyFacts]) -> list[str]:
    return [f.uid for f in facts]


def test_results_come_a_page_at_a_time(paged: Page) -> None:
    status = paged.locator("#studies-status")
    search(paged)
    expect(status).to_have_text(f"Showing 1{DASH}{PAGE_SIZE} of {PAGED_COUNT} studies.")
    assert page_rows(paged) == uids(PAGED_FACTS[:PAGE_SIZE])
    expect(paged.locator("#studies-previous")).to_be_disabled()
    expect(paged.locator("#studies-next")).to_be_enabled()

    go(paged, "#studies-next", PAGE_SIZE)
    expect(status).to_have_text(
        f"Showing {PAGE_SIZE + 1}{DASH}{2 * PAGE_SIZE} of {PAGED_COUNT} studies."
    )
    assert page_rows(paged) == uids(PAGED_FACTS[PAGE_SIZE : 2 * PAGE_SIZE])
    expect(paged.locator("#studies-previous")).to_be_enabled()

    go(paged, "#studies-next", 2 * PAGE_SIZE)
    expect(status).to_have_text(
        f"Showing {2 * PAGE_SIZE + 1}{DASH}{PAGED_COUNT} of {PAGED_COUNT} studies."
    )
    assert page_rows(paged) == uids(PAGED_FACTS[2 * PAGE_SIZE :])
    expect(paged.locator("#studies-next")).to_be_disabled()

    go(paged, "#studies-previous", PAGE_SIZE)
    expect(status).to_have_text(
        f"Showing {PAGE_SIZE + 1}{DASH}{2 * PAGE_SIZE} of {PAGED_COUNT} studies."
    )
    assert page_rows(paged) == uids(PAGED_FACTS[PAGE_SIZE : 2 * PAGE_SIZE])

    # A new search starts again at its first page.
    search(paged, patient_id="PAGE-00*")
    expect(status).to_have_text("10 studies found.")
    assert page_rows(paged) == uids(PAGED_FACTS[:10])
    expect(paged.locator("#studies-pager")).to_be_hidden()


def sort_by(page: Page, key: str) -> None:
    with page.expect_response(lambda r: "/dicom-web/studies?" in r.url) as answer:
        page.click(f'#studies-table th button[data-key="{key}"]')
    assert "orderby=" in answer.value.url
    expect(page.locator("#studies-status")).not_to_have_text("Searching…")


def test_sorting_by_a_column_orders_the_whole_result(paged: Page) -> None:
    search(paged)
    sort_by(paged, "PatientName")
    names = sorted(PAGED_FACTS, key=lambda f: f.patient_name)
    assert page_rows(paged) == uids(names[:PAGE_SIZE])
    header = paged.locator('#studies-table th:has(button[data-key="PatientName"])')
    expect(header).to_have_attribute("aria-sort", "ascending")
    # The next page goes on in that order, over the whole archive, not within a page.
    go(paged, "#studies-next", PAGE_SIZE)
    assert page_rows(paged) == uids(names[PAGE_SIZE : 2 * PAGE_SIZE])
    assert "sort=PatientName" in paged.url
    sort_by(paged, "PatientName")  # again: descending, from the first page
    expect(header).to_have_attribute("aria-sort", "descending")
    assert page_rows(paged) == uids(names[::-1][:PAGE_SIZE])
    sort_by(paged, "StudyDate")
    dates = [c.replace("-", "") for c in column(paged, "#studies-table", 3)]
    assert dates == sorted(f.date for f in PAGED_FACTS)[:PAGE_SIZE]


def test_a_search_in_the_address_reloads_to_the_same_results(paged: Page) -> None:
    search(paged, patient_id="PAGE-01*")
    sort_by(paged, "StudyDate")
    address = paged.url
    shown = page_rows(paged)
    expected = sorted(
        (f for f in PAGED_FACTS if f.patient_id.startswith("PAGE-01")), key=lambda f: f.date
    )
    assert shown == uids(expected)
    paged.goto("about:blank")
    paged.goto(address)
    expect(paged.locator("#studies-status")).to_have_text(f"{len(expected)} studies found.")
    assert page_rows(paged) == shown
    assert paged.locator("#patient-id").input_value() == "PAGE-01*"


def test_a_cut_announced_by_the_server_is_shown(paged: Page) -> None:
    # pypacs cuts only searches without a limit, and the page always gives one; the
    # server's answer is passed on with the Warning another origin server may add when it
    # caps the limit (PS3.18 8.3.4.4).
    text = (
        "The number of results exceeded the maximum supported by the server. "
        "Additional results can be requested."
    )

    def with_warning(route: Any) -> None:
        response = route.fetch()
        headers = {**response.headers, "warning": f"299 pacs.example.org: {text}"}
        route.fulfill(response=response, headers=headers)

    paged.route("**/dicom-web/studies?*", with_warning)
    search(paged)
    expect(paged.locator("#studies-status")).to_have_text(
        f"Showing 1{DASH}{PAGE_SIZE} of {PAGED_COUNT} studies. The server cut the results: {text}"
    )
    expect(paged.locator("#studies-status")).to_have_class("error")
    assert page_rows(paged) == uids(PAGED_FACTS[:PAGE_SIZE])


@pytest.fixture(scope="module")
def single_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "ui-single", datasets=[PAGED[0]])
    yield srv
    srv.kill()


def test_counts_of_one_are_singular(browser: Browser, single_server: RunningServer) -> None:
    for page in _browser_page(browser, single_server):
        search(page)
        expect(page.locator("#studies-status")).to_have_text("1 study found.")
        assert page_rows(page) == [PAGED_FACTS[0].uid]
        expect(page.locator("#studies-pager")).to_be_hidden()
        search(page, patient_id="NOBODY")
        expect(page.locator("#studies-status")).to_have_text("No study found.")
