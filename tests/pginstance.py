"""A PostgreSQL server of a test's own, on a free port, that the test stops and starts:
initdb and pg_ctl run as the ``postgres`` OS user (the tests run as root, which PostgreSQL
refuses), in a temporary folder that user owns."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from pathlib import Path

from qrscp import free_port


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin")
    return found[-1]  # the newest version installed


class PgInstance:
    """``start()``, ``stop()``, ``url``; ``remove()`` stops it and deletes its folder."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are root's only, closed to postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="pypacs-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            _binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"
        )

    def _as_postgres(self, *args: str) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.folder,
        )
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")
        return done.stdout

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._as_postgres(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-t",
            "120",
            "start",
        )

    def stop(self) -> None:
        """Stop it the fast way: sessions are ended, nothing waits for clients."""
        self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", _binary("pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=60,
        )
        return done.returncode == 0

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
