"""The series viewer (static/viewer.js) in a real headless Chromium against a running pypacs:
the test opens the page, imports the module and mounts a viewer into a div of its own for a
40-slice CT series, a multi-frame ultrasound image, an SR and an encapsulated PDF. What is
shown is checked on screenshots decoded with Pillow, and on the counter's text."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from findfixtures import serve_datasets
from serving import RunningServer
from viewerdata import (
    CT_WINDOW,
    SR_TREE,
    STUDY,
    Content,
    encapsulated_pdf,
    series_uid,
    viewer_set,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run"]
SLICES = 40
WIDTH, HEIGHT = 480, 400  # the viewer's div, in CSS pixels (device pixel ratio 1)
TIMEOUT = 30_000  # ms: generous, the machine is shared
VIEWER = "#viewer-under-test"
STAGE = f"{VIEWER} .pv-stage"
COUNTER = f"{VIEWER} .pv-counter"

MOUNT = """async ([study, series, width, height]) => {
  const { mountSeriesViewer } = await import("/viewer.js");
  const div = document.createElement("div");
  div.id = "viewer-under-test";
  div.style.cssText = `position: fixed; left: 0; top: 0; z-index: 100000;
    width: ${width}px; height: ${height}px`;
  document.body.append(div);
  window.shown = [];
  div.addEventListener("pypacs-viewer-shown", (e) => window.shown.push(e.detail.index));
  window.viewerUnderTest = await mountSeriesViewer(div, { study, series });
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = serve_datasets(tmp_path_factory, "viewer", datasets=viewer_set(SLICES))
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        yield _launch(p)


def _launch(p: Playwright) -> Browser:
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc.message}\n{exc.stack}"))
    page.goto(f"http://127.0.0.1:{server.http_port}/")
    yield page
    context.close()
    assert [e for e in errors if "viewer.js" in e] == [], "the viewer's script failed"


def mount(page: Page, series: int) -> None:
    page.evaluate(MOUNT, [STUDY, series_uid(series), WIDTH, HEIGHT])


def wait_shown(page: Page, index: int) -> None:
    """Until the image of item ``index`` has loaded in the viewer."""
    page.wait_for_function(
        "(i) => window.shown.includes(i) && document.querySelector("
        "'#viewer-under-test .pv-image').dataset.index === String(i)"
        " && document.querySelector('#viewer-under-test .pv-image').complete",
        arg=index,
    )


def poll(page: Page, condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds, the page's events handled meanwhile."""
    deadline = time.monotonic() + TIMEOUT / 1000
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        page.wait_for_timeout(50)


def stage_pixels(page: Page) -> NDArray[Any]:
    data = page.locator(STAGE).screenshot()
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L")).astype(np.int16)


def assert_not_blank(pixels: NDArray[Any]) -> None:
    assert int(pixels.max()) - int(pixels.min()) > 100, "a flat image"
    assert len(np.unique(pixels)) > 8


def mean_difference(a: NDArray[Any], b: NDArray[Any]) -> float:
    return float(np.abs(a - b).mean())


def test_ct_series_fits_scrolls_and_prefetches(page: Page) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/rendered" in r.url else None)
    mount(page, 1)
    counter = page.locator(COUNTER)
    expect(counter).to_have_text(f"1 / {SLICES}")
    expect(counter).to_have_attribute("aria-live", "polite")
    label = page.locator(f"{VIEWER} .pv-viewer").get_attribute("aria-label")
    assert label is not None
    assert label.startswith("Series viewer")
    wait_shown(page, 0)
    first = stage_pixels(page)
    assert_not_blank(first)
    # The viewport asked for is the stage's size in device pixels (PS3.18 8.3.5.1.3).
    box = page.locator(STAGE).bounding_box()
    assert box is not None
    viewports = {parse_qs(urlsplit(u).query)["viewport"][0] for u in requests}
    assert viewports == {f"{round(box['width'])},{round(box['height'])}"}
    # The next four images were asked for before any was shown.
    frames = [u.split("/instances/")[1].split("/")[0] for u in requests]
    assert len(set(frames)) >= 5

    page.locator(STAGE).hover()
    page.mouse.wheel(0, 120)
    expect(counter).to_have_text(f"2 / {SLICES}")
    page.mouse.wheel(0, -120)
    expect(counter).to_have_text(f"1 / {SLICES}")
    page.locator(f"{VIEWER} .pv-viewer").focus()
    for key, expected in [
        ("ArrowDown", 2),
        ("ArrowRight", 3),
        ("ArrowUp", 2),
        ("PageDown", 12),
        ("End", SLICES),
        ("PageUp", SLICES - 10),
        ("Home", 1),
        ("End", SLICES),
    ]:
        page.keyboard.press(key)
        expect(counter).to_have_text(f"{expected} / {SLICES}")
    wait_shown(page, SLICES - 1)
    last = stage_pixels(page)
    assert_not_blank(last)
    # The disk grows from slice to slice: the last one differs from the first.
    assert mean_difference(first, last) > 3


def test_window_presets_and_dragging(page: Page) -> None:
    windows: list[str] = []
    page.on(
        "request",
        lambda r: (
            windows.append(parse_qs(urlsplit(r.url).query)["window"][0])
            if "window=" in r.url
            else None
        ),
    )
    mount(page, 1)
    wait_shown(page, 0)
    before = stage_pixels(page)
    presets = page.locator(f"{VIEWER} .pv-preset")
    expect(presets).to_have_text(["Default", "Brain", "Lung", "Bone", "Abdomen"])
    presets.filter(has_text="Lung").click()
    expect(page.locator(f"{VIEWER} .pv-window")).to_have_text("W 1500 / L -600")
    page.wait_for_function("() => window.shown.length >= 2")
    wait_shown(page, 0)
    lung = stage_pixels(page)
    assert_not_blank(lung)
    assert mean_difference(before, lung) > 5
    assert windows[-1] == "-600,1500,linear"

    presets.filter(has_text="Default").click()
    expect(page.locator(f"{VIEWER} .pv-window")).to_have_text("")
    # Drag from the instance's own window (40/400): right widens, down raises the center,
    # by width / 256 per pixel.
    box = page.locator(STAGE).bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    shown = page.evaluate("() => window.shown.length")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 64, y + 128, steps=16)
    page.mouse.up()
    center, width = CT_WINDOW
    step = width / 256
    expected = f"W {width + 64 * step:g} / L {center + 128 * step:g}"
    expect(page.locator(f"{VIEWER} .pv-window")).to_have_text(expected)
    final = f"{center + 128 * step:g},{width + 64 * step:g},linear"
    poll(page, lambda: bool(windows) and windows[-1] == final)
    page.wait_for_function(f"() => window.shown.length > {shown}")
    wait_shown(page, 0)
    dragged = stage_pixels(page)
    assert mean_difference(before, dragged) > 5


def test_multiframe_frames_and_cine(page: Page) -> None:
    mount(page, 2)
    counter = page.locator(COUNTER)
    expect(counter).to_have_text("1 / 1 \N{MIDDLE DOT} frame 1 / 8")
    wait_shown(page, 0)
    one = stage_pixels(page)
    assert_not_blank(one)
    page.locator(f"{VIEWER} .pv-viewer").focus()
    page.keyboard.press("ArrowDown")
    expect(counter).to_have_text("1 / 1 \N{MIDDLE DOT} frame 2 / 8")
    wait_shown(page, 1)
    two = stage_pixels(page)
    assert mean_difference(one, two) > 3  # the bar moved
    play = page.locator(f"{VIEWER} .pv-play")
    expect(play).to_be_visible()
    expect(play).to_have_text("Play")
    play.click()
    expect(play).to_have_text("Pause")
    expect(counter).not_to_have_text("1 / 1 \N{MIDDLE DOT} frame 2 / 8")
    page.wait_for_function("() => new Set(window.shown).size >= 5")
    play.click()
    expect(play).to_have_text("Play")


def _sr_lines(content: Content, depth: int) -> list[str]:
    lines = []
    for child in content.children:
        text = f"{child.name}: {child.text}" if child.text else child.name
        lines.append("  " * depth + text)
        lines.extend(_sr_lines(child, depth + 1))
    return lines


def test_sr_text(page: Page) -> None:
    mount(page, 3)
    report = page.locator(f"{VIEWER} .pv-sr")
    expected = "\n".join([SR_TREE.name, *_sr_lines(SR_TREE, 1)])
    expect(report).to_have_text(expected)
    assert "    Conclusion: Follow-up CT in 6 months suggested." in expected
    expect(page.locator(f"{VIEWER} .pv-presets")).to_be_hidden()
    expect(page.locator(COUNTER)).to_have_text("1 / 1")


def test_encapsulated_pdf_shown(page: Page) -> None:
    _, document = encapsulated_pdf()
    mount(page, 4)
    frame = page.locator(f"{VIEWER} iframe.pv-pdf")
    expect(frame).to_be_attached()
    src = frame.get_attribute("src")
    assert src is not None
    response = page.request.get(page.url.rstrip("/") + src)
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body() == document
    expect(page.locator(f"{VIEWER} a.pv-open")).to_have_attribute("href", src)
    # The frame itself went to the document.
    poll(page, lambda: any(f.url.endswith(src) for f in page.frames))


def test_wrong_arguments_and_an_empty_series(page: Page) -> None:
    message = page.evaluate(
        """async () => {
          const { mountSeriesViewer } = await import("/viewer.js");
          try {
            await mountSeriesViewer(document.createElement("div"), { study: "1.2.3" });
            return "mounted";
          } catch (error) {
            return error.message;
          }
        }"""
    )
    assert message == "mountSeriesViewer needs a study and a series UID"
    mount(page, 99)  # no such series: QIDO-RS finds no instance
    expect(page.locator(f"{VIEWER} .pv-message")).to_have_text("This series holds no instances.")


def test_first_image_waits_for_the_stylesheet(page: Page) -> None:
    """A stylesheet that arrives late (a loaded server, a slow link) does not make the
    viewer ask for its first image at the size of an unstyled stage."""

    def late(route: Any) -> None:
        time.sleep(0.5)
        route.continue_()

    page.route("**/viewer.css", late)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/rendered" in r.url else None)
    mount(page, 1)
    wait_shown(page, 0)
    box = page.locator(STAGE).bounding_box()
    assert box is not None and box["height"] > 200
    viewports = {parse_qs(urlsplit(u).query)["viewport"][0] for u in requests}
    assert viewports == {f"{round(box['width'])},{round(box['height'])}"}
