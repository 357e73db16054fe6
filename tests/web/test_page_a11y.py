"""The web page checked by axe-core (the accessibility engine, from the npm registry at a
pinned version whose sha512 is checked, cached outside the repository) in headless Chromium
against a running pypacs: the studies list, the patients list, a study page with a series'
images open, the tag view and the archive page have no serious or critical violation."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from webpage import opened

from dicomgen import Spec, make_dataset
from findfixtures import serve_datasets
from receiver import config_file, receiver
from serving import RunningServer

TIMEOUT = 60_000  # ms: generous, the machine is shared
AXE_VERSION = "4.10.3"
# The registry's dist.integrity of axe-core@4.10.3 (npm view axe-core@4.10.3 dist.integrity).
AXE_SHA512 = (
    "Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
)
AXE_CACHE = Path(
    os.environ.get("PYPACS_TEST_AXE_CACHE", Path.home() / ".cache" / "pypacs-test-axe")
)
FAILING_IMPACTS = {"serious", "critical"}

DATASETS = [
    make_dataset(Spec("AXE-1", "Access^Ada", 1, 1, 1, rows=64, study_date="20240105")),
    make_dataset(Spec("AXE-1", "Access^Ada", 1, 1, 2, rows=64, study_date="20240105")),
    make_dataset(Spec("AXE-1", "Access^Ada", 1, 2, 1, modality="MR", rows=64)),
    make_dataset(Spec("AXE-2", "Other^Otto", 1, 1, 1, study_date="20230701")),
    # Another name under AXE-2: a demographics conflict for the archive page's table.
    make_dataset(Spec("AXE-2", "Other^Ottokar", 2, 1, 1, study_date="20230702")),
]
STUDY = str(DATASETS[0].StudyInstanceUID)
SERIES = str(DATASETS[0].SeriesInstanceUID)


def axe_tarball() -> Path:
    """axe-core's package, fetched by npm into the cache once, its digest checked."""
    AXE_CACHE.mkdir(parents=True, exist_ok=True)
    tarball = AXE_CACHE / f"axe-core-{AXE_VERSION}.tgz"
    if not tarball.exists():
        done = subprocess.run(
            ["npm", "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", str(AXE_CACHE)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=AXE_CACHE,
        )
        assert done.returncode == 0, f"npm pack axe-core@{AXE_VERSION} failed: {done.stderr}"
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != AXE_SHA512:
        tarball.unlink()
        pytest.fail(f"{tarball}: sha512 {digest}, expected {AXE_SHA512}; removed")
    return tarball


@pytest.fixture(scope="session")
def axe_source() -> str:
    with tarfile.open(axe_tarball(), "r:gz") as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None
        return io.TextIOWrapper(member, encoding="utf-8").read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with receiver(ae_title="DEST") as dest:
        config = config_file(tmp_path_factory.mktemp("a11y-config"), [dest])
        srv = serve_datasets(tmp_path_factory, "a11y", "--config", str(config), datasets=DATASETS)
        try:
            yield srv
        finally:
            srv.kill()


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    yield from opened(
        browser,
        f"http://127.0.0.1:{server.http_port}/",
        timeout_ms=TIMEOUT,
        viewport={"width": 1280, "height": 900},
    )


def violations(page: Page, axe_source: str) -> list[str]:
    """axe-core's serious and critical violations of the page as it is now, one line each."""
    page.add_script_tag(content=axe_source)
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, { resultTypes: ['violations'] })).violations"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in found
        if v["impact"] in FAILING_IMPACTS
    ]


def go(page: Page, address: str) -> None:
    page.goto(page.url.split("#")[0] + address)


def test_the_studies_list(page: Page, axe_source: str) -> None:
    expect(page.locator("#studies-status")).to_have_text("3 studies found.")
    expect(page.locator("#studies-table tbody tr")).to_have_count(3)
    assert violations(page, axe_source) == []


def test_the_patients_list(page: Page, axe_source: str) -> None:
    page.click("#site-nav a[data-view=patients]")
    expect(page.locator("#patients-status")).to_have_text("2 patients found.")
    assert violations(page, axe_source) == []


def test_a_study_page_with_a_series_open(page: Page, axe_source: str) -> None:
    go(page, f"#/study/{STUDY}")
    expect(page.locator("#series tbody tr")).to_have_count(2)
    page.locator(f'#series tr[data-series="{SERIES}"] button', has_text="Images").click()
    view = page.locator(f'.series-view[data-series="{SERIES}"]')
    expect(view.locator(".pv-counter")).to_have_text("1 / 2")
    assert violations(page, axe_source) == []


def test_the_tag_view(page: Page, axe_source: str) -> None:
    ds = DATASETS[0]
    go(page, f"#/tags/{STUDY}/{SERIES}/{ds.SOPInstanceUID}")
    expect(page.locator("#tags-table tbody tr", has_text="(0010,0010)")).to_be_visible()
    assert violations(page, axe_source) == []


def test_the_archive_page(page: Page, axe_source: str) -> None:
    page.click("#site-nav a[data-view=archive]")
    expect(page.locator("#stat-instances")).to_have_text(str(len(DATASETS)))
    expect(page.locator("#remotes-table tbody tr")).to_have_count(1)
    expect(page.locator("#conflicts-table tbody tr")).to_have_count(1)
    expect(page.locator("#ingest-chart svg")).to_be_attached()
    assert violations(page, axe_source) == []


def test_a_violation_is_found(page: Page, axe_source: str) -> None:
    # The check itself works: an image button without a name is a critical violation.
    page.evaluate(
        "() => { const b = document.createElement('button');"
        " b.id = 'nameless'; document.querySelector('main').append(b); }"
    )
    found = violations(page, axe_source)
    assert any(line.startswith("button-name (critical)") and "#nameless" in line for line in found)
