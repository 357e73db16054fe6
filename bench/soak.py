"""Soak: pypacs under mixed load for a long time, its resident memory, threads and open
descriptors sampled at a fixed interval; they must end flat.

Every kind of request at once, each from its own loop: C-STORE (DCMTK storescu, new
instances each round), C-FIND and C-GET (findscu, getscu), QIDO-RS, WADO-RS, STOW-RS and
rendered images over HTTP. Output: ``soak.csv`` (one row a sample), ``soak.svg`` (the three
series plotted) and ``soak.json`` (the summary: first and last quarter's means, growth).

    .venv/bin/python bench/soak.py [--minutes 60] [--interval 10] [--out DIR]

Not a test: the tests run a short version (tests/archive/test_soak_short.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from targets import PypacsTarget, nodelay_env, require_binary, status_kib

_CT = "1.2.840.10008.5.1.4.1.1.2"
_BOUNDARY = "soakpart"


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_mib: float
    threads: int
    descriptors: int


def instance(study: str, patient: str) -> Dataset:
    """A small CT instance of ``study`` with fresh series and instance UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _CT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = patient, "Soak^Test", "CT"
    ds.StudyDate, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "1", 1, 1
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(range(256)) * 32
    return ds


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def sample(pid: int, started: float) -> Sample:
    task = Path(f"/proc/{pid}")
    threads = len(list((task / "task").iterdir())) if task.exists() else 0
    descriptors = len(list((task / "fd").iterdir())) if task.exists() else 0
    return Sample(
        round(time.monotonic() - started, 1), status_kib(pid, "VmRSS") / 1024, threads, descriptors
    )


class Load:
    """The request loops; each counts its outcomes until ``stop`` is set."""

    def __init__(self, target: PypacsTarget, folder: Path, study: str) -> None:
        self.target, self.folder, self.study = target, folder, study
        self.http = f"http://127.0.0.1:{target.http_port}/dicom-web"
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _dimse(self, tool: str, *options: str, files: Sequence[Path] = ()) -> bool:
        command = [tool, "-aec", self.target.ae_title, *options]
        command += ["127.0.0.1", str(self.target.dicom_port), *map(str, files)]
        done = subprocess.run(command, capture_output=True, env=nodelay_env(), timeout=120)
        if done.returncode != 0:
            print(f"{tool}: {done.stderr.decode(errors='replace')[-300:]}", file=sys.stderr)
        return done.returncode == 0

    def store(self) -> bool:
        path = self.folder / "store.dcm"
        path.write_bytes(part10(instance(self.study, "SOAK")))
        return self._dimse("storescu", files=[path])

    def find(self) -> bool:
        return self._dimse(
            "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=SOAK"
        )

    def get(self) -> bool:
        out = self.folder / "got"
        out.mkdir(exist_ok=True)
        ok = self._dimse(
            "getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
            "-k", f"StudyInstanceUID={self.study}", "-k", f"SeriesInstanceUID={self.first_series}",
        )  # fmt: skip
        for item in out.iterdir():
            item.unlink()
        return ok

    def _http(
        self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> bool:
        request = urllib.request.Request(url, data=data, headers=headers or {})
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()
            return bool(200 <= answer.status < 300)

    def qido(self) -> bool:
        return self._http(f"{self.http}/studies?PatientID=SOAK&includefield=all")

    def wado(self) -> bool:
        series = f"{self.http}/studies/{self.study}/series/{self.first_series}"
        return self._http(series, headers={"Accept": 'multipart/related; type="application/dicom"'})

    def stow(self) -> bool:
        body = (
            f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + part10(instance(self.study, "SOAK"))
            + f"\r\n--{_BOUNDARY}--\r\n".encode()
        )
        kind = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
        return self._http(f"{self.http}/studies", body, {"Content-Type": kind})

    def rendered(self) -> bool:
        series = f"{self.http}/studies/{self.study}/series/{self.first_series}"
        return self._http(f"{series}/thumbnail?viewport=64,64", headers={"Accept": "image/jpeg"})

    def start(self) -> list[threading.Thread]:
        seed = instance(self.study, "SOAK")
        self.first_series = str(seed.SeriesInstanceUID)
        path = self.folder / "seed.dcm"
        path.write_bytes(part10(seed))
        if not self._dimse("storescu", files=[path]):
            raise RuntimeError("the first instance was not stored")
        loops: Sequence[Callable[[], bool]] = (
            self.store, self.find, self.get, self.qido, self.wado, self.stow, self.rendered,
        )  # fmt: skip
        threads = [
            threading.Thread(target=self._loop, args=(fn,), name=fn.__name__, daemon=True)
            for fn in loops
        ]
        for thread in threads:
            thread.start()
        return threads

    def _loop(self, fn: Callable[[], bool]) -> None:
        while not self.stop.is_set():
            try:
                self._count(fn.__name__ if fn() else f"{fn.__name__} failed")
            except Exception as exc:  # a refused request is a figure, not the end of the soak
                self._count(f"{fn.__name__} failed")
                print(f"{fn.__name__}: {exc}", file=sys.stderr)


def settled(pid: int, started: float, first: Sample, wait: float = 20.0) -> Sample:
    """A sample once the load has stopped: taken when threads and descriptors are back to
    where they started, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    now = sample(pid, started)
    while time.monotonic() < deadline and (
        now.descriptors > first.descriptors or now.threads > first.threads
    ):
        time.sleep(0.5)
        now = sample(pid, started)
    return now


def svg(samples: Sequence[Sample]) -> str:
    """The three series, each scaled to its own maximum, as one small SVG chart."""
    width, height, pad = 720, 240, 30
    end = max(s.seconds for s in samples) or 1.0
    colours = {"rss_mib": "#c0392b", "threads": "#2471a3", "descriptors": "#229954"}
    lines = []
    for name, colour in colours.items():
        values = [float(getattr(s, name)) for s in samples]
        top = max(values) or 1.0
        points = " ".join(
            f"{pad + (width - 2 * pad) * s.seconds / end:.1f},"
            f"{height - pad - (height - 2 * pad) * v / top:.1f}"
            for s, v in zip(samples, values, strict=True)
        )
        lines.append(f'<polyline fill="none" stroke="{colour}" points="{points}"/>')
        lines.append(
            f'<text x="{pad}" y="{14 + 14 * len(lines) // 2}" fill="{colour}" font-size="11">'
            f"{name} (max {top:.0f})</text>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="white"/>{"".join(lines)}'
        f'<text x="{pad}" y="{height - 8}" font-size="11">0 .. {end:.0f} s</text></svg>'
    )


def summary(samples: Sequence[Sample], counts: Counter[str]) -> dict[str, object]:
    """Means of the first and last quarter of the samples, and the growth between them."""
    quarter = max(len(samples) // 4, 1)
    first, last = samples[:quarter], samples[-quarter:]
    out: dict[str, object] = {"requests": dict(counts), "samples": len(samples)}
    for name in ("rss_mib", "threads", "descriptors"):
        early = statistics.mean(float(getattr(s, name)) for s in first)
        late = statistics.mean(float(getattr(s, name)) for s in last)
        out[name] = {"first_quarter": round(early, 1), "last_quarter": round(late, 1)}
        out[f"{name}_growth"] = round(late / early, 3) if early else None
    return out


def soak(minutes: float, interval: float, out: Path) -> dict[str, object]:
    for tool in ("storescu", "findscu", "getscu"):
        require_binary(tool)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pypacs-soak-") as tmp:
        work = Path(tmp)
        target = PypacsTarget()
        target.start(work / "server")
        try:
            load = Load(target, work, generate_uid())
            threads = load.start()
            started = time.monotonic()
            samples = [sample(target.proc.pid, started)]
            while time.monotonic() - started < minutes * 60:
                time.sleep(interval)
                samples.append(sample(target.proc.pid, started))
            load.stop.set()
            for thread in threads:
                thread.join(timeout=180)
            after = settled(target.proc.pid, started, samples[0])
        finally:
            target.stop()
    with (out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)
    (out / "soak.svg").write_text(svg(samples))
    result = summary(samples, load.counts)
    result["start"], result["after_load"] = asdict(samples[0]), asdict(after)
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pypacs-soak"
    )
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.interval, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
