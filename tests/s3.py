"""An S3-compatible object store for tests: a real moto_server process on a free loopback
port, and a TCP proxy in front of it that can count, cut or stall what passes."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from qrscp import free_port

# Never real ones: moto accepts any.
ACCESS_KEY = "AKIATESTPYPACSONLY01"
SECRET_KEY = "pypacs-test-secret-not-real-0123456789ab"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Moto:
    proc: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path

    def client(self, endpoint: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 2}),
        )

    def new_bucket(self) -> str:
        name = "t-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        s3 = self.client()
        found: dict[str, bytes] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def start_moto(folder: Path, timeout: float = 60.0) -> Moto:
    """Start ``moto.server`` on a free port and wait until it answers."""
    port = free_port()
    log_path = folder / "moto.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=5).close()
            return Moto(proc, endpoint, log_path)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"moto_server did not start: {log_path.read_text()[-2000:]}"
                ) from None
            time.sleep(0.1)


class Proxy:
    """A TCP proxy on a free port to ``target``; counts the bytes each way and can be told
    to ``cut`` (close both sides once a request has sent that many bytes) or ``stall`` (stop
    forwarding requests, holding the connection open) the connections that follow."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.upstream_bytes = 0  # client → server
        self.downstream_bytes = 0  # server → client
        self.mode = "pass"
        self.cut_after = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def healthy(self) -> None:
        self.mode = "pass"
        self._drop_all()

    def cut(self, after: int = 64 * 1024) -> None:
        self.mode, self.cut_after = "cut", after
        self._drop_all()

    def stall(self) -> None:
        self.mode = "stall"
        self._drop_all()

    def reset_counts(self) -> None:
        with self._lock:
            self.upstream_bytes = self.downstream_bytes = 0

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            mode = self.mode
            threading.Thread(
                target=self._pump, args=(client, server, True, mode), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, False, mode), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool, mode: str) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if up and mode == "stall":
                    continue  # swallowed: the server never sees the request
                if up and mode == "cut" and sent + len(data) > self.cut_after:
                    break
                dst.sendall(data)
                sent += len(data)
                with self._lock:
                    if up:
                        self.upstream_bytes += len(data)
                    else:
                        self.downstream_bytes += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
