"""Object storage over the S3 protocol (the minio SDK), made async.

The minio client is synchronous; every call runs in a worker thread so it never
blocks the event loop. Its HTTP pool is bounded and every call has timeouts.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from kit.settings import S3Settings

T = TypeVar("T")

_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
# Bytes handed over per read of a streamed object: small enough to keep memory flat,
# large enough that the thread hop per chunk is cheap next to the copy.
STREAM_CHUNK_BYTES = 64 * 1024
# Bytes of a file sent per socket write by put_file.
PUT_BLOCK_BYTES = 256 * 1024
# How long put_file's presigned URL is valid: it is used at once, retries included.
_PUT_URL_TTL = timedelta(minutes=5)
# S3's DeleteObjects takes at most 1000 keys per request.
_DELETE_BATCH = 1000


class StorageError(Exception):
    """The object store could not complete a call."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    content_type: str


def _http_pool(pool_size: int, timeout_seconds: float) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        maxsize=pool_size,
        # A streamed body (put_file) is sent this many bytes per write.
        blocksize=PUT_BLOCK_BYTES,
        timeout=urllib3.Timeout(connect=min(3.0, timeout_seconds), read=timeout_seconds),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class _BodyWindow:
    """``length`` bytes of ``file`` from its position now, as a request body urllib3
    streams (``read``) and rewinds for a retry (``tell`` / ``seek``, relative)."""

    def __init__(self, file: IO[bytes], length: int) -> None:
        self._file = file
        self._start = file.tell()
        self._end = self._start + length
        # A body shorter than its Content-Length would hang the PUT until its timeout.
        available = file.seek(0, io.SEEK_END) - self._start
        file.seek(self._start)
        if available < length:
            raise ValueError(f"the file holds {available} bytes from its position, not {length}")

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._file.tell()
        if left <= 0:
            return b""
        return self._file.read(left if size < 0 else min(size, left))

    def tell(self) -> int:
        return self._file.tell() - self._start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        return self._file.seek(self._start + offset) - self._start


class ObjectStream:
    """An open GET of one object, read chunk by chunk; always :meth:`aclose` it.

    The body stays on the socket until asked for, so at most one chunk of the
    object is in memory at a time, whatever its size.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, size: int, chunk_bytes: int) -> None:
        self._response = response
        self.size = size
        self._chunks: Iterator[bytes] = response.stream(chunk_bytes)
        self.chunks_read = 0
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The object's bytes, one chunk per worker-thread read."""
        while True:
            try:
                chunk = await asyncio.to_thread(next, self._chunks, b"")
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise StorageError(f"object read failed: {type(exc).__name__}") from exc
            if not chunk:
                return
            self.chunks_read += 1
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back (or drop it, if the body was not read to its end)."""
        if not self.closed:
            self.closed = True
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._response.close()
        self._response.release_conn()


def _minio(
    settings: S3Settings,
    endpoint: str,
    secure: bool,
    http_client: urllib3.PoolManager | None = None,
) -> Minio:
    """A client of ``endpoint`` with the settings' credentials and region."""
    access_key, secret_key = settings.storage_credentials()
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=secure,
        region=settings.s3_region,
        http_client=http_client,
    )


class ObjectStorage:
    """Buckets and objects; all methods are coroutines."""

    def __init__(self, settings: S3Settings, *, pool_size: int = 16, timeout_seconds: float = 15.0):
        self._http = _http_pool(pool_size, timeout_seconds)
        self._client = _minio(settings, settings.s3_endpoint, settings.s3_secure, self._http)
        # Signed URLs name the host a provider or a browser reaches; with the region
        # set, signing asks no server anything, so this client never connects.
        self._signer = self._client
        if settings.s3_signed_base_url is not None:
            base = urlsplit(settings.s3_signed_base_url)
            self._signer = _minio(settings, base.netloc, base.scheme == "https")

    async def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""

        def _ensure() -> None:
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket)
                except S3Error as exc:
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

        await self._call(_ensure)

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        """Write an object (overwriting any previous one), as :meth:`put_file` does."""
        await self.put_file(bucket, key, io.BytesIO(data), len(data), content_type)

    async def put_file(
        self, bucket: str, key: str, fileobj: IO[bytes], length: int, content_type: str
    ) -> None:
        """Write ``length`` bytes read from ``fileobj`` (from its current position).

        One PUT to a presigned URL, its body streamed from the file ``PUT_BLOCK_BYTES``
        at a time: memory holds one block, whatever the object's size, and the body is
        sent as UNSIGNED-PAYLOAD, so it is not hashed here. (The SDK's ``put_object``
        reads 5 MiB parts into memory, hashes each over plain HTTP, and splits a file
        over 5 MiB into a multipart upload of four or more requests.) 5xx answers and
        connection errors are retried by the pool, the body rewound.
        """
        body = _BodyWindow(fileobj, length)
        url = self._client.presigned_put_object(bucket, key, expires=_PUT_URL_TTL)

        def _put() -> None:
            response = self._http.request(
                "PUT",
                url,
                # Read, tell and seek: all urllib3 asks of a file body.
                body=cast(IO[bytes], body),
                headers={"Content-Type": content_type, "Content-Length": str(length)},
            )
            if response.status != 200:
                raise StorageError(f"object storage answered {response.status} to a PUT")

        await self._call(_put)

    async def stat(self, bucket: str, key: str) -> StoredObject | None:
        """The object's facts, or None when it does not exist."""

        def _stat() -> StoredObject | None:
            try:
                info = self._client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise
            return StoredObject(
                bucket, key, int(info.size or 0), info.content_type or "application/octet-stream"
            )

        return await self._call(_stat)

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes | None:
        """The object's bytes (None when missing); refuses objects over ``max_bytes``."""

        def _get() -> bytes | None:
            try:
                response = self._client.get_object(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise
            try:
                data = response.read(max_bytes + 1)
            finally:
                response.close()
                response.release_conn()
            if len(data) > max_bytes:
                raise StorageError(f"object {bucket}/{key} is larger than {max_bytes} bytes")
            return bytes(data)

        return await self._call(_get)

    async def open_stream(
        self, bucket: str, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES
    ) -> ObjectStream | None:
        """Start a GET of the object without reading its body (None when missing)."""

        def _open() -> ObjectStream | None:
            try:
                response = self._client.get_object(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise
            return ObjectStream(
                response, int(response.headers.get("content-length", 0)), chunk_bytes
            )

        return await self._call(_open)

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursively)."""

        def _list() -> list[str]:
            items = self._client.list_objects(bucket, prefix=prefix, recursive=True)
            return [item.object_name for item in items if item.object_name]

        return await self._call(_list)

    async def remove_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``, found by listing; returns how many.

        Listing (rather than deleting known names) also catches files whose names
        the caller does not know, such as those a later version adds. Repeat-safe.
        """
        if not prefix.endswith("/"):
            raise ValueError("a prefix to remove must end with '/'")
        keys = await self.list_keys(bucket, prefix)
        for start in range(0, len(keys), _DELETE_BATCH):
            await self.remove(bucket, keys[start : start + _DELETE_BATCH])
        return len(keys)

    async def remove(self, bucket: str, keys: list[str]) -> None:
        """Delete objects; missing ones are not an error."""

        def _remove() -> None:
            errors = list(self._client.remove_objects(bucket, [DeleteObject(key) for key in keys]))
            if errors:
                raise StorageError(f"{len(errors)} objects could not be removed")

        await self._call(_remove)

    async def presigned_get_url(self, bucket: str, key: str, ttl_seconds: int) -> str:
        """A signed GET URL that expires after ``ttl_seconds``."""
        return await self._call(
            lambda: self._signer.presigned_get_object(
                bucket, key, expires=timedelta(seconds=ttl_seconds)
            )
        )

    async def copy(
        self, source: tuple[str, str], target: tuple[str, str], content_type: str, max_bytes: int
    ) -> bool:
        """Copy ``(bucket, key)`` to ``(bucket, key)`` through a spooled file (bounded
        memory, any S3 server); False when the source does not exist."""

        def _copy() -> bool:
            try:
                response = self._client.get_object(*source)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return False
                raise
            with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
                try:
                    size = 0
                    for chunk in response.stream(64 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise StorageError(f"object {source[1]} is larger than {max_bytes}")
                        spool.write(chunk)
                finally:
                    response.close()
                    response.release_conn()
                spool.seek(0)
                self._client.put_object(
                    *target, cast(BinaryIO, spool), size, content_type=content_type
                )
            return True

        return await self._call(_copy)

    def sign_get_url(self, bucket: str, key: str, ttl_seconds: int) -> str:
        """A signed GET URL that expires after ``ttl_seconds``, computed locally.

        With the region configured the SDK asks the server nothing: signing is an
        HMAC, cheaper than the thread hop :meth:`presigned_get_url` pays.
        """
        return self._signer.presigned_get_object(
            bucket, key, expires=timedelta(seconds=ttl_seconds)
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        # MinioException, not only S3Error: an error answer without an S3 XML body (a
        # proxy's 429 page, a load balancer's 502) is InvalidResponseError or ServerError.
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"object storage call failed: {type(exc).__name__}") from exc
