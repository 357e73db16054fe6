"""Series viewer benchmark: how soon the next image shows when scrolling through a series.

    .venv/bin/python bench/page_viewer.py [--slices 300] [--size 512] [--interval 33]
                                          [--viewport 800x700] [--out DIR]

Starts pypacs fresh in a temporary folder, stores one series of ``--slices`` CT slices of
``--size`` x ``--size`` 16-bit pixels with DCMTK ``storescu``, opens the web page in headless
Chromium (Playwright), mounts the series viewer (static/viewer.js) in a div of
``--viewport`` CSS pixels, and presses the Down arrow once per image, waiting for each image
and then ``--interval`` ms (a held key repeats about every 33 ms). For each press it takes, in
the page, the time from the keydown event to the new image's load event. Prints the median,
95th percentile and largest of those times, and writes them as JSON into ``--out``. Figures
move with the machine's load; no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from clients import store
from targets import HOST, PypacsTarget, log

CHROMIUM = "/usr/bin/chromium"
STUDY = "1.2.826.0.1.3680043.10.1255.77.1"
SERIES = "1.2.826.0.1.3680043.10.1255.77.1.1"

# In the page: the times from each keydown to the next image's load event.
INSTRUMENT = """async ([study, series, width, height]) => {
  const { mountSeriesViewer } = await import("/viewer.js");
  const div = document.createElement("div");
  div.style.cssText = `position: fixed; left: 0; top: 0; width: ${width}px; height: ${height}px`;
  document.body.append(div);
  window.bench = { pressed: null, times: [], shown: -1 };
  document.addEventListener("keydown", (e) => { window.bench.pressed = performance.now(); }, true);
  div.addEventListener("pypacs-viewer-shown", (e) => {
    const bench = window.bench;
    if (bench.pressed !== null) bench.times.push(performance.now() - bench.pressed);
    bench.pressed = null;
    bench.shown = e.detail.index;
  });
  await mountSeriesViewer(div, { study, series });
  div.querySelector(".pv-viewer").focus();
}"""


def write_series(folder: Path, slices: int, size: int) -> None:
    """``slices`` CT slices: a ramp with a disk whose radius changes with the slice."""
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = (xx * 1500 // size).astype(np.uint16)
    for number in range(1, slices + 1):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "Bench^Viewer", "BENCH-VIEWER"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
        ds.StudyDate, ds.Modality, ds.SeriesNumber = "20240101", "CT", 1
        ds.InstanceNumber = number
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        radius = size * (0.1 + 0.3 * number / slices)
        disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
        ds.PixelData = np.where(disk, np.uint16(1084), ramp).astype("<u2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)


def scroll(http_port: int, slices: int, viewport: tuple[int, int], interval: int) -> list[float]:
    """The milliseconds from each Down key press to its image's load event."""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"http://{HOST}:{http_port}/")
            page.evaluate(INSTRUMENT, [STUDY, SERIES, *viewport])
            page.wait_for_function("() => window.bench.shown === 0")
            for index in range(1, slices):
                page.keyboard.press("ArrowDown")
                page.wait_for_function("(i) => window.bench.shown === i", arg=index)
                page.wait_for_timeout(interval)
            times: list[float] = page.evaluate("() => window.bench.times")
        finally:
            browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--interval", type=int, default=33, help="ms between presses")
    parser.add_argument("--viewport", default="800x700", help="the viewer's CSS pixels, WxH")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pypacs-bench")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.viewport.split("x"))
    with tempfile.TemporaryDirectory(prefix="pypacs-viewer-bench-") as tmp:
        work = Path(tmp)
        series = work / "series"
        series.mkdir()
        log(f"writing {args.slices} slices of {args.size}x{args.size}")
        write_series(series, args.slices, args.size)
        target = PypacsTarget()
        (work / "pypacs").mkdir()
        with target.running(work / "pypacs"):
            sent = store(target.ae_title, target.dicom_port, [series], work / "logs")
            log(f"stored: {sent}")
            times = scroll(target.http_port, args.slices, (width, height), args.interval)
    ordered = sorted(times)
    result = {
        "slices": args.slices,
        "size": args.size,
        "viewport": args.viewport,
        "interval_ms": args.interval,
        "presses": len(times),
        "median_ms": statistics.median(ordered),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(
        f"{result['presses']} presses over {args.slices} {args.size}x{args.size} slices: "
        f"key press to image loaded median {result['median_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "page_viewer.json").write_text(json.dumps({**result, "times_ms": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
