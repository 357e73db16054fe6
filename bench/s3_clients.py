"""Which S3 client the blob store uses: boto3 (botocore) against obstore, against moto_server.

Measures, for each client, against a fresh moto_server on a free loopback port:
- put of N small objects (10 KB each) from 4 threads, then get of all of them (4 threads);
- put of one large object (150 MiB) from a file on disk, then get of it into a file.

    .venv/bin/python bench/s3_clients.py [--small 2000] [--large-mib 150] [--rounds 2]

Prints one line per client and operation (seconds, best of the rounds; the machine is
shared, so compare the clients within one run). Needs the ``test`` extra (moto[server],
boto3, obstore).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BUCKET = "bench"
THREADS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto_server did not start")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Boto:
    name = "boto3"

    def __init__(self, endpoint: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 3}),
        )
        self.transfer = TransferConfig(
            multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=THREADS
        )

    def put_small(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    def get_small(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def put_file(self, key: str, path: Path) -> None:
        self.s3.upload_file(str(path), BUCKET, key, Config=self.transfer)

    def get_file(self, key: str, path: Path) -> None:
        self.s3.download_file(BUCKET, key, str(path), Config=self.transfer)


class Obstore:
    name = "obstore"

    def __init__(self, endpoint: str) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(
            BUCKET,
            endpoint=endpoint,
            region="us-east-1",
            client_options={"allow_http": True},
            virtual_hosted_style_request=False,
        )

    def put_small(self, key: str, data: bytes) -> None:
        self.obs.put(self.store, key, data)

    def get_small(self, key: str) -> bytes:
        return bytes(self.obs.get(self.store, key).bytes())

    def put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as fp:
            self.obs.put(self.store, key, fp, chunk_size=16 << 20, max_concurrency=THREADS)

    def get_file(self, key: str, path: Path) -> None:
        with path.open("wb") as out:
            for chunk in self.obs.get(self.store, key).stream(min_chunk_size=8 << 20):
                out.write(chunk)


def run(client: Any, small: int, large: Path, work: Path) -> dict[str, float]:
    payload = [secrets.token_bytes(10 * 1024) for _ in range(small)]
    keys = [f"{client.name}/small/{i:05d}" for i in range(small)]
    with ThreadPoolExecutor(THREADS) as pool:
        put_small = timed(lambda: list(pool.map(client.put_small, keys, payload)))
        got: list[bytes] = []
        get_small = timed(lambda: got.extend(pool.map(client.get_small, keys)))
    assert got == payload, "small objects read back differ"
    put_large = timed(lambda: client.put_file(f"{client.name}/large", large))
    back = work / f"{client.name}-large"
    get_large = timed(lambda: client.get_file(f"{client.name}/large", back))
    assert back.stat().st_size == large.stat().st_size, "large object read back differs"
    back.unlink()
    return {"put small": put_small, "get small": get_small, "put large": put_large,
            "get large": get_large}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large-mib", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, endpoint = start_moto()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            large = work / "large"
            with large.open("wb") as out:
                for _ in range(args.large_mib):
                    out.write(secrets.token_bytes(1 << 20))
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.rounds):
                for make in (Boto, Obstore):
                    client = make(endpoint)
                    for op, seconds in run(client, args.small, large, work).items():
                        key = (client.name, op)
                        best[key] = min(best.get(key, seconds), seconds)
        print(f"{'client':8} {'operation':10} {'seconds':>8}")
        for (name, op), seconds in best.items():
            print(f"{name:8} {op:10} {seconds:8.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
