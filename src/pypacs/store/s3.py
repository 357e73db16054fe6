"""S3-compatible blob store (the optional ``s3`` extra): objects ``PREFIX/ab/<32 hex>``.

boto3 was chosen over obstore by measurement (bench/README.md): against moto_server both
put and get small objects at the same rate, boto3 wrote a 150 MiB object faster, obstore
read it faster; boto3 lists and aborts interrupted multipart uploads, which ``scan`` needs.

A blob is written into a local temporary file first (so memory stays flat whatever its
size), then uploaded at ``commit``: one PUT up to 16 MiB, a multipart upload with parts sent
in parallel above. S3 makes an object visible only once the PUT or
CompleteMultipartUpload has succeeded, and a success means it is durable, so ``commit``
returns only after that answer. Credentials come the usual way for S3 clients (environment
variables, shared credentials file); they never appear in a message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pypacs.errors import StoreError
from pypacs.store.base import BlobKey

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024  # above this a blob goes as a multipart upload of such parts
_PARALLEL_PARTS = 4
_READ_AHEAD = 4 * 1024 * 1024  # what one ranged GET of an open blob fetches at least
# Multipart uploads older than this are leftovers of interrupted writes; newer ones may be
# another node's upload under way.
_STALE_UPLOAD = timedelta(hours=1)
_HEX = frozenset("0123456789abcdef")
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store:
    """Blobs as objects of ``bucket`` under ``prefix``, keyed ``ab/<32 hex>`` as the
    filesystem store's, so that ``scan`` groups them the same way.

    Raises (at construction):
        StoreError: the bucket is missing, the endpoint unreachable or the credentials
            refused; the message names the URL, never a credential.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str = "",
        region: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        attempts: int = 3,
        spool_dir: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._spool_dir = spool_dir
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": attempts, "mode": "standard"},
            max_pool_connections=32,
        )
        session = boto3.session.Session()
        self._client: S3Client = session.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            config=config,
        )
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
        self._secrets = [s for s in (frozen or ()) if s]
        self._parts = ThreadPoolExecutor(_PARALLEL_PARTS * 2, thread_name_prefix="s3-part")
        where = f" at {endpoint_url}" if endpoint_url else ""
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            reason = "no such bucket" if _is_missing(exc) else self._reason(exc)
            raise StoreError(f"cannot use the object store {self.url}{where}: {reason}") from None
        except BotoCoreError as exc:
            raise StoreError(
                f"cannot use the object store {self.url}{where}: {self._reason(exc)}"
            ) from None

    # -- keys ---------------------------------------------------------------------------

    def _object(self, key: BlobKey) -> str:
        folder, _, name = key.partition("/")
        if len(name) != 32 or folder != name[:2] or not set(name) <= _HEX:
            raise StoreError(f"not a blob key of this store: {key!r}")
        return self.prefix + key

    def _new_key(self) -> BlobKey:
        name = secrets.token_hex(16)
        return BlobKey(f"{name[:2]}/{name}")

    def _reason(self, exc: BaseException) -> str:
        """What went wrong, without any credential in it."""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            # A HEAD answer has no body: its code is the HTTP status alone.
            text = f"HTTP {status}" if code in ("", str(status)) else f"{code} (HTTP {status})"
            text = f"{text}: {message}" if message else text
        else:
            text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, action: str, key: BlobKey | str, exc: BaseException) -> StoreError:
        return StoreError(f"cannot {action} blob {key} in {self.url}: {self._reason(exc)}")

    # -- writing ------------------------------------------------------------------------

    def begin(self) -> PendingObject:
        try:
            fd, path = tempfile.mkstemp(prefix="pypacs-s3-", dir=self._spool_dir)
            os.unlink(path)  # anonymous: gone with the process, whatever happens
        except OSError as exc:
            raise StoreError(f"cannot make a temporary file for a blob: {exc}") from exc
        return PendingObject(self, self._new_key(), fd)

    def put(self, chunks: Iterable[bytes | memoryview]) -> tuple[BlobKey, int]:
        pending = self.begin()
        try:
            for chunk in chunks:
                pending.write(chunk)
        except BaseException:
            pending.abandon()
            raise
        return pending.commit()

    def _upload(self, key: BlobKey, fd: int, size: int) -> None:
        """Send the temporary file's ``size`` bytes as the object of ``key``; return once S3
        has answered success (PUT 200 or CompleteMultipartUpload 200: durable).

        Raises:
            StoreError: the upload failed; any multipart upload it began is aborted.
        """
        name = self._object(key)
        if size <= PART_SIZE:
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=cast(Any, _Region(fd, 0, size)),
                    ContentLength=size,
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._error("write", key, exc) from None
            return
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=name)[
                "UploadId"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write", key, exc) from None
        try:
            parts = list(self._parts.map(
                lambda n: self._upload_part(name, upload_id, fd, n, size),
                range(1, (size + PART_SIZE - 1) // PART_SIZE + 1),
            ))  # fmt: skip
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": cast(Any, parts)},
            )
        except (ClientError, BotoCoreError) as exc:
            self._abort(name, upload_id)
            raise self._error("write", key, exc) from None
        except BaseException:
            self._abort(name, upload_id)
            raise

    def _upload_part(
        self, name: str, upload_id: str, fd: int, number: int, size: int
    ) -> dict[str, Any]:
        start = (number - 1) * PART_SIZE
        length = min(PART_SIZE, size - start)
        answer = self._client.upload_part(
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=cast(Any, _Region(fd, start, length)),
            ContentLength=length,
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:  # scan() removes it once it is stale
            log.warning("could not abort the upload of %s: %s", name, self._reason(exc))

    # -- reading ------------------------------------------------------------------------

    def _head(self, key: BlobKey) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any], self._client.head_object(Bucket=self.bucket, Key=self._object(key))
            )
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._error("look up", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("look up", key, exc) from None

    def open(self, key: BlobKey) -> BinaryIO:
        head = self._head(key)
        if head is None:
            raise StoreError(f"cannot read blob {key}: not in {self.url}")
        raw = _RangeReader(self, key, int(head["ContentLength"]))
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=_READ_AHEAD))

    def _get_range(self, key: BlobKey, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of the blob (keys are never reused, so a
        blob never changes once written)."""
        try:
            answer = self._client.get_object(
                Bucket=self.bucket,
                Key=self._object(key),
                Range=f"bytes={start}-{end - 1}",  # RFC 9110 14.1.2: last byte included
            )
            return answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._error("read", key, exc) from None

    def delete(self, key: BlobKey) -> None:
        # Deleting a missing object succeeds in S3 (204), which makes this idempotent.
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from None

    def exists(self, key: BlobKey) -> bool:
        return self._head(key) is not None

    def size(self, key: BlobKey) -> int:
        head = self._head(key)
        if head is None:
            raise StoreError(f"cannot stat blob {key}: not in {self.url}")
        return int(head["ContentLength"])

    def age(self, key: BlobKey) -> float:
        """Seconds since the blob was written, by the object store's own clock.

        Raises:
            StoreError: the blob is missing or cannot be looked up.
        """
        head = self._head(key)
        if head is None:
            raise StoreError(f"cannot stat blob {key}: not in {self.url}")
        written: datetime = head["LastModified"]
        return float((_server_now(head) - written).total_seconds())

    # -- consistency --------------------------------------------------------------------

    def scan(self) -> Iterator[tuple[str, list[BlobKey]]]:
        self._drop_stale_uploads()
        listed = self._list_keys()
        pending = next(listed, None)
        for i in range(256):
            group = f"{i:02x}/"
            keys: list[BlobKey] = []
            while pending is not None and pending[:3] <= group:
                if pending.startswith(group):
                    keys.append(pending)
                pending = next(listed, None)
            yield group, keys

    def _list_keys(self) -> Iterator[BlobKey]:
        """This store's keys in order (S3 lists in UTF-8 binary order); other objects under
        the prefix are left alone."""
        pages = self._client.get_paginator("list_objects_v2")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    folder, _, name = key.partition("/")
                    if len(name) == 32 and folder == name[:2] and set(name) <= _HEX:
                        yield BlobKey(key)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot list {self.url}: {self._reason(exc)}") from None

    def _drop_stale_uploads(self) -> None:
        pages = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                now = _server_now(page)
                for upload in page.get("Uploads", []):
                    if now - upload["Initiated"] > _STALE_UPLOAD:
                        log.warning("removing an interrupted upload of %s", upload["Key"])
                        self._abort(upload["Key"], upload["UploadId"])
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(
                f"cannot list the uploads of {self.url}: {self._reason(exc)}"
            ) from None

    def prefix_bounds(self, prefix: str) -> tuple[str, str]:
        return prefix, prefix[:-1] + chr(ord("/") + 1)

    def close(self) -> None:
        """Nothing held between requests beyond the client's pool, which goes with it."""


class PendingObject:
    """A blob written into an anonymous temporary file, uploaded on ``commit``."""

    def __init__(self, store: S3Store, key: BlobKey, fd: int) -> None:
        self.key = key
        self._store, self._fd = store, fd
        self._size = 0
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, self._size)
                view = view[written:]
                self._size += written
        except OSError as exc:
            raise StoreError(f"cannot write the temporary file of blob {self.key}: {exc}") from exc

    def read_view(self) -> memoryview:
        if self._size == 0:
            return memoryview(b"")
        if self._map is None or len(self._map) != self._size:
            self._unmap()
            self._map = mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ)
        return memoryview(self._map)

    def reader(self) -> BinaryIO:
        # Writes go by position (pwrite), so a duplicate's own offset is free to move.
        return cast(BinaryIO, os.fdopen(os.dup(self._fd), "rb"))

    def _unmap(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still held: freed when dropped
                self._map.close()
            self._map = None

    def written(self) -> None:
        """Nothing to start early: the upload happens in ``commit``."""

    def commit(self) -> tuple[BlobKey, int]:
        self._unmap()
        try:
            self._store._upload(self.key, self._fd, self._size)
        finally:
            self.abandon()
        return self.key, self._size

    def place(self) -> tuple[BlobKey, int]:
        return self.commit()  # an object is durable once its upload returns

    def settle(self) -> None:
        """Nothing left to wait for: ``place`` uploaded the object."""

    def abandon(self) -> None:
        self._unmap()
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1


class _Region(io.RawIOBase):
    """``length`` bytes of a file from ``start``, read by position: a request body that
    botocore can read, and rewind to retry, without the bytes ever being held in memory."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd, self._start, self._length = fd, start, length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._length - self._pos)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._pos
        size = min(size, self._length - self._pos)
        data = os.pread(self._fd, size, self._start + self._pos) if size > 0 else b""
        self._pos += len(data)
        return data

    def __len__(self) -> int:
        return self._length


class _RangeReader(io.RawIOBase):
    """An object read by ranged GETs as the reader asks (the ``BufferedReader`` around it
    reads ahead), so a header or one frame does not fetch the whole object."""

    def __init__(self, store: S3Store, key: BlobKey, size: int) -> None:
        self._store, self._key, self._size = store, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        end = min(self._size, self._pos + len(buffer))
        if end <= self._pos:
            return 0
        data = self._store._get_range(self._key, self._pos, end)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        # One GET for the rest, where RawIOBase would ask for it 8 KiB at a time.
        if self._pos >= self._size:
            return b""
        data = self._store._get_range(self._key, self._pos, self._size)
        self._pos += len(data)
        return data


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _NOT_FOUND or status == 404


def _server_now(answer: Any) -> datetime:
    """The object store's time of an answer (its Date header, RFC 9110 6.6.1), so that ages
    do not depend on this machine's clock; this machine's when it has none."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(date)
    return datetime.now(UTC)
