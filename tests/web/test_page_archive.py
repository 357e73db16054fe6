"""The web page's archive view in headless Chromium against a running pypacs: the
demographics conflicts table lists what a second instance of a Patient ID brought that
differs from the stored patient, and a send started from a study page shows in the sends
list while it runs and then as done."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from webpage import opened

from dicomgen import Spec, make_dataset
from findfixtures import serve_datasets
from receiver import Receiver, config_file, receiver
from serving import RunningServer

TIMEOUT = 60_000  # ms: generous, the machine is shared
SENT = 5  # instances of the study sent from the page

# One Patient ID, two names (and birth dates): the second study's instance is the conflict.
FIRST = make_dataset(Spec("CONF-1", "Conflict^Carl", 1, 1, 1))
SECOND = make_dataset(Spec("CONF-1", "Conflict^Karl", 2, 1, 1, birth_date="19800101"))
TO_SEND = [make_dataset(Spec("SEND-1", "Sent^Sara", 1, 1, n)) for n in range(1, SENT + 1)]
SEND_STUDY = str(TO_SEND[0].StudyInstanceUID)


@dataclass
class Pacs:
    server: RunningServer
    dest: Receiver
    gate: threading.Event  # the destination answers the third C-STORE once it is set

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    gate = threading.Event()

    def status_for(_uid: str, n: int) -> int:
        if n == 3:  # hold the send half-way until the test has seen it running
            gate.wait(timeout=120)
        return 0x0000

    with receiver(ae_title="DEST", status_for=status_for) as dest:
        config = config_file(tmp_path_factory.mktemp("page-archive-config"), [dest])
        srv = serve_datasets(
            tmp_path_factory,
            "page-archive",
            "--config",
            str(config),
            datasets=[FIRST, SECOND, *TO_SEND],
        )
        try:
            yield Pacs(srv, dest, gate)
        finally:
            gate.set()
            srv.kill()


@pytest.fixture
def page(browser: Browser, pacs: Pacs) -> Iterator[Page]:
    yield from opened(
        browser, pacs.url, timeout_ms=TIMEOUT, viewport={"width": 1280, "height": 900}
    )


def test_the_conflicts_table_shows_what_differed(page: Page) -> None:
    page.click("#site-nav a[data-view=archive]")
    expect(page.locator("#conflicts-status")).to_have_text("2 conflicts to review.")
    table = page.locator("#conflicts-table")
    expect(table).to_be_visible()
    rows = {
        cells[1]: cells
        for cells in (
            row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all()
        )
    }
    assert set(rows) == {"patient_name", "patient_birth_date"}
    sop = str(SECOND.SOPInstanceUID)
    assert rows["patient_name"][:5] == [
        "CONF-1",
        "patient_name",
        "Conflict^Carl",
        "Conflict^Karl",
        sop,
    ]
    assert rows["patient_birth_date"][0] == "CONF-1"
    assert rows["patient_birth_date"][3:5] == ["19800101", sop]
    # Seen when it was stored: a UTC date and time, to the second.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows["patient_name"][5])


def test_a_send_started_on_a_study_page_shows_in_the_sends_list(page: Page, pacs: Pacs) -> None:
    pacs.dest.received.clear()
    page.goto(pacs.url + f"#/study/{SEND_STUDY}")
    expect(page.locator("#study-heading")).to_have_text("Study of Sent, Sara")
    page.select_option("#remote", "dest")
    with page.expect_response(lambda r: r.url.endswith("/api/remotes/dest/move")) as answer:
        page.click("#send-button")
    assert answer.value.status == 202
    job = answer.value.json()["job"]
    page.click("#site-nav a[data-view=archive]")
    row = page.locator(f'#jobs-table tbody tr[data-job="{job}"]')
    # Held at the third instance: the list shows the send under way.
    expect(row).to_have_attribute("data-state", "running")
    cells = row.locator("td")
    expect(cells.nth(0)).to_have_text("Study of Sent, Sara")
    expect(cells.nth(2)).to_have_text(re.compile(r"^Sending to dest: [0-2] sent, 0 failed, "))
    progress = cells.nth(1).locator("progress")
    # Indeterminate (position -1) until the job's first progress is saved, then a part.
    position, value, maximum = progress.evaluate("p => [p.position, p.value, p.max]")
    assert position == -1 or (value < SENT and maximum == SENT)
    pacs.gate.set()
    # The page looks again by itself until the send is over.
    expect(row).to_have_attribute("data-state", "done")
    expect(cells.nth(2)).to_have_text(f"Done: {SENT} sent, 0 failed, 0 with warnings.")
    assert progress.evaluate("p => [p.value, p.max]") == [SENT, SENT]
    assert {r.sop_instance_uid for r in pacs.dest.received} == {
        str(ds.SOPInstanceUID) for ds in TO_SEND
    }
