"""The HTTP side stays bounded under abuse, against a running pypacs over real sockets: slow
clients (a request head or body that never comes) are answered 408 and closed, connections
past ``[web] max_connections`` are refused, the DICOM port and other HTTP clients keep being
served meanwhile, descriptors come back, and an over-long request target or header section
gets 414 or 431 in the JSON error shape."""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pypacs.config import load
from pypacs.errors import ConfigError

from helpers import echo, wait_for
from serving import RunningServer, start_pypacs

LIMITS = (
    "--header-timeout",
    "3",
    "--body-timeout",
    "3",
    "--keep-alive-timeout",
    "2",
    "--max-connections",
    "20",
    "--max-url-bytes",
    "4096",
    "--max-header-bytes",
    "8192",
)
STOW_HEAD = (
    b"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
    b"Content-Length: 2000000000\r\n\r\n"
)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_pypacs(tmp_path / "data", *LIMITS)
    yield srv
    srv.kill()


def descriptors(srv: RunningServer) -> int:
    """How many descriptors the server process has open."""
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def connect(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(first)
    sock.setblocking(False)
    return sock


def answers_until_closed(socks: list[socket.socket], timeout: float) -> list[bytes | None]:
    """Read every socket until the server closes it; what each got (None: a reset). Fails
    when one is still open after ``timeout`` seconds."""
    got: list[bytearray | None] = [bytearray() for _ in socks]
    selector = selectors.DefaultSelector()
    for number, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, number)
    deadline = time.monotonic() + timeout
    while selector.get_map():
        left = deadline - time.monotonic()
        assert left > 0, f"{len(selector.get_map())} connections still open after {timeout} s"
        for key, _ in selector.select(timeout=left):
            number = key.data
            try:
                chunk = socks[number].recv(65536)
            except ConnectionResetError:
                got[number] = None
                chunk = b""
            else:
                buffer = got[number]
                assert buffer is not None
                buffer += chunk
            if not chunk:
                selector.unregister(socks[number])
    selector.close()
    return [None if g is None else bytes(g) for g in got]


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body of a whole HTTP/1.1 response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, json.loads(body)


def health_eventually(port: int, timeout: float) -> dict[str, Any]:
    """GET /api/health until it answers 200; a refusal meanwhile is a 503 in the JSON shape
    or a connection the server closed at once."""

    def attempt() -> dict[str, Any] | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=30)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
            return None
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "too-many-connections"
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    result: dict[str, Any] = wait_for(attempt, timeout=timeout, what="GET /api/health")
    return result


def test_slow_clients_are_closed_while_dicom_and_http_are_served(limited: RunningServer) -> None:
    port = limited.http_port
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    start = descriptors(limited)
    # 5 request heads announcing 2 GB of body that never comes, then 50 connections that
    # send one byte of a request line and nothing more: 20 may be open at once.
    bodies = [connect(port, STOW_HEAD) for _ in range(5)]
    heads = [connect(port, b"G") for _ in range(50)]
    try:
        # Meanwhile the DICOM port answers, and so does the HTTP port once slots are free.
        assert echo(limited.dicom_port) == "0x0000"
        assert health_eventually(port, timeout=60)["status"] == "ok"
        body_answers = answers_until_closed(bodies, timeout=60)
        head_answers = answers_until_closed(heads, timeout=60)
    finally:
        for sock in bodies + heads:
            sock.close()
    for answer in body_answers:
        assert answer is not None
        status, headers, error = parse(answer)
        assert (status, headers["connection"]) == (408, "close")
        assert error == {
            "error": {
                "status": 408,
                "code": "request-timeout",
                "message": "the request body paused for more than 3 s",
            }
        }
    timed_out = refused = 0
    for answer in head_answers:
        if answer is None or answer == b"":
            refused += 1  # refused with its first byte unread: a reset instead of the 503
            continue
        status, headers, error = parse(answer)
        assert headers["connection"] == "close"
        if status == 503:
            refused += 1
            assert error == {
                "error": {
                    "status": 503,
                    "code": "too-many-connections",
                    "message": "the server has 20 HTTP connections open",
                }
            }
        else:
            timed_out += 1
            assert (status, error["error"]["code"]) == (408, "request-timeout")
            assert error["error"]["message"] == (
                "the request's line and headers did not arrive within 3 s"
            )
    # The 5 stalled bodies and 15 stalled heads held the 20 slots; the 35 others were refused.
    assert (timed_out, refused) == (15, 35)
    wait_for(lambda: descriptors(limited) <= start + 2, timeout=30, what="descriptors back")
    assert echo(limited.dicom_port) == "0x0000"
    log = limited.log()
    assert "([web] header_timeout)" in log and "([web] body_timeout)" in log


def test_idle_keep_alive_connection_is_closed(limited: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", limited.http_port), timeout=30)
    with sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.setblocking(False)
        (answer,) = answers_until_closed([sock], timeout=30)
    assert answer is not None
    status, _, body = parse(answer)  # one answer, then the close after 2 s idle
    assert (status, body["status"]) == (200, "ok")


def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 256))


def test_descriptor_reserve_keeps_the_dicom_port_answering(tmp_path: Path) -> None:
    # Soft limit 64, hard 256: pypacs raises the soft limit to 256 and lowers
    # max_connections to 128, half of it, so that 300 idle HTTP connections cannot take
    # the descriptors the DICOM side needs.
    srv = start_pypacs(
        tmp_path / "data",
        "--max-connections",
        "1000",
        "--header-timeout",
        "120",
        preexec=low_descriptor_limit,
    )
    socks: list[socket.socket] = []
    try:
        limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
        (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == ["256", "256"]
        assert "[web] max_connections = 1000 lowered to 128" in srv.log()
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", srv.http_port), timeout=30))
        # Every connection was accepted or refused by the server (none waits in its queue).
        refusals = socks[128:]
        for sock in refusals:
            sock.setblocking(False)
        answers = answers_until_closed(refusals, timeout=60)
        assert all(a is None or a == b"" or parse(a)[0] == 503 for a in answers)
        assert descriptors(srv) < 256
        assert echo(srv.dicom_port) == "0x0000"
    finally:
        for sock in socks:
            sock.close()
        srv.kill()


def raw(port: int, request: bytes) -> bytes:
    """Send a whole request as given; what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def get(target: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def too_long(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message}}


URI_TOO_LONG = too_long(
    414, "uri-too-long", "the request target (path and query) exceeds 4096 bytes"
)
HEADERS_TOO_LARGE = too_long(
    431, "headers-too-large", "the request's header fields exceed 8192 bytes"
)
CASES: list[Any] = [
    pytest.param(get(b"/" + b"a" * 200_000), 414, URI_TOO_LONG, id="200-KB-path"),
    pytest.param(
        get(b"/dicom-web/studies?PatientID=" + b"9" * 5000), 414, URI_TOO_LONG, id="query"
    ),
    pytest.param(get(b"/" + b"a" * 4096), 414, URI_TOO_LONG, id="one-past"),
    pytest.param(
        get(b"/api/health", b"X-Big: " + b"b" * 100_000), 431, HEADERS_TOO_LARGE, id="one"
    ),
    pytest.param(
        get(b"/api/health", *(b"X-H%d: %s" % (n, b"c" * 100) for n in range(100))),
        431,
        HEADERS_TOO_LARGE,
        id="many",
    ),
]


@pytest.mark.parametrize(("request_bytes", "status", "expected"), CASES)
def test_oversized_head_is_answered_in_the_json_shape(
    limited: RunningServer, request_bytes: bytes, status: int, expected: dict[str, Any]
) -> None:
    got_status, headers, body = parse(raw(limited.http_port, request_bytes))
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body == expected
    assert httpx.get(f"http://127.0.0.1:{limited.http_port}/api/health").status_code == 200


def section_of(size: int) -> bytes:
    """An X-Big field that makes get()'s header section (each field line with its CRLF)
    ``size`` bytes long."""
    others = len(b"Host: 127.0.0.1\r\n") + len(b"Connection: close\r\n")
    return b"X-Big: " + b"b" * (size - others - len(b"X-Big: \r\n"))


def test_head_at_the_limits_is_served_and_one_byte_more_is_not(limited: RunningServer) -> None:
    # A 4096-byte target and an 8192-byte header section reach pypacs (here: 404).
    answer = raw(limited.http_port, get(b"/" + b"a" * 4095, section_of(8192)))
    status, _, body = parse(answer)
    assert (status, body["error"]["code"]) == (404, "not-found")
    answer = raw(limited.http_port, get(b"/api/health", section_of(8193)))
    assert parse(answer)[2] == HEADERS_TOO_LARGE


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("header_timeout = 0", "[web] header_timeout = 0: expected a positive integer"),
        ('body_timeout = "60"', '[web] body_timeout = "60": expected an integer'),
        ("keep_alive_timeout = -1", "[web] keep_alive_timeout = -1: expected a positive integer"),
        ("max_connections = true", "[web] max_connections = true: expected an integer"),
        ("max_url_bytes = 0", "[web] max_url_bytes = 0: expected a positive integer"),
        ("max_header_bytes = 1.5", "[web] max_header_bytes = 1.5: expected an integer"),
    ],
)
def test_limits_are_checked_in_the_configuration(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "pypacs.toml"
    path.write_text(f"[web]\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: {expected}"


def test_limits_reach_the_web_options(tmp_path: Path) -> None:
    path = tmp_path / "pypacs.toml"
    path.write_text("[web]\nheader_timeout = 7\nmax_connections = 9\n")
    web = load(path).web_options()
    assert (web.header_timeout, web.body_timeout, web.max_connections) == (7, 60, 9)
    assert (web.keep_alive_timeout, web.max_url_bytes, web.max_header_bytes) == (5, 16384, 65536)
