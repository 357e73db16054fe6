"""A full disk can be repaired through pypacs: on a small filesystem of its own (tmpfs,
mounted by the test as root), filled to the last byte by pypacs and by someone else, a
DELETE still goes through, stores resume once room is back, and `check` reports instead
of failing."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomgen import Spec, make_dataset, write_dataset
from helpers import store_files
from serving import RunningServer, start_pypacs

DISK_BYTES = 12 * 1024 * 1024
RESERVE = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Take every byte left on the disk, as another program would."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def study(n: int) -> Spec:
    return Spec("FULL", "Full^Disk", n, 1, 1, rows=512)  # about 0.5 MiB each


def test_a_full_disk_can_be_repaired(small_disk: Path, tmp_path: Path) -> None:
    data = small_disk / "data"
    srv: RunningServer = start_pypacs(data, "--reserve-bytes", str(RESERVE))
    try:
        assert (data / "space-reserve").stat().st_size == RESERVE
        files = tmp_path / "files"
        files.mkdir()
        paths = [write_dataset(make_dataset(study(n)), files) for n in range(1, 30)]
        statuses = [int(s.Status) for s in store_files(srv.dicom_port, paths).values()]
        stored = statuses.index(0xA700)
        assert stored > 5 and set(statuses[stored:]) == {0xA700}
        fill(small_disk / "someone-else")
        assert shutil.disk_usage(small_disk).free == 0

        # Without the reserve this was 503 "database or disk is full".
        uid = make_dataset(study(1)).StudyInstanceUID
        answer = httpx.delete(f"http://127.0.0.1:{srv.http_port}/dicom-web/studies/{uid}")
        assert answer.status_code in (200, 204), answer.text
        assert "space reserve" in srv.log() and "released" in srv.log()

        # Stores wait until the reserve can be made again (twice its size free), then resume.
        (small_disk / "someone-else").unlink()
        again = write_dataset(make_dataset(Spec("FULL2", "Room^Again", 1, 1, 1)), files)
        status = store_files(srv.dicom_port, [again])[again]
        assert int(status.Status) == 0xA700
        assert "delete to make room" in str(status.ErrorComment)
        assert (data / "blobs").exists() and not (data / "space-reserve").exists()
        for n in range(2, 8):
            uid = make_dataset(study(n)).StudyInstanceUID
            url = f"http://127.0.0.1:{srv.http_port}/dicom-web/studies/{uid}"
            assert httpx.delete(url).status_code in (200, 204)
        assert int(store_files(srv.dicom_port, [again])[again].Status) == 0
        assert (data / "space-reserve").stat().st_size == RESERVE
    finally:
        srv.stop()

    fill(small_disk / "someone-else")
    checked = subprocess.run(
        [sys.executable, "-m", "pypacs", "check", "--no-repair", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in checked.stderr, checked.stderr
    assert checked.returncode == 0, checked.stderr
    assert f"{stored - 7 + 1} blobs checked" in checked.stdout
