"""DICOMweb request and answer helpers: multipart bodies, the JSON error shape, stored bytes."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from helpers import blob_path, index_rows
from serving import RunningServer

BOUNDARY = "pypacs-test-7f3a"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def base(srv: RunningServer) -> str:
    """The DICOMweb root of a running server."""
    return f"http://127.0.0.1:{srv.http_port}/dicom-web"


def multipart(parts: Sequence[bytes | tuple[str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/related body; a part is its bytes (application/dicom) or (type, bytes)."""
    out = bytearray()
    for part in parts:
        kind, content = part if isinstance(part, tuple) else ("application/dicom", part)
        head = f"--{boundary}\r\n" + (f"Content-Type: {kind}\r\n" if kind else "") + "\r\n"
        out += head.encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stored(srv: RunningServer) -> dict[str, bytes]:
    """SOP Instance UID → the bytes of its blob, for every indexed instance."""
    return {
        row["sop_instance_uid"]: blob_path(srv.data, row["blob_key"]).read_bytes()
        for row in index_rows(srv.database_url, "instance")
    }


def assert_error(response: httpx.Response, status: int, code: str, parameter: str | None) -> str:
    """The one JSON error shape (web/http/errors.py); returns its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["status"], error["code"], error.get("parameter")) == (status, code, parameter)
    return str(error["message"])
