"""ObjectStorage.remove_prefix and open_stream against the real S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kit.settings import S3Settings
from kit.storage import ObjectStorage, StorageError
from testkit.plugin import S3Endpoint

BUCKET = "kit-removal"


@pytest.fixture
async def storage(s3_server: S3Endpoint) -> ObjectStorage:
    storage = ObjectStorage(S3Settings.model_validate(s3_server.env()))
    await storage.ensure_bucket(BUCKET)
    return storage


async def test_remove_prefix_removes_exactly_what_is_under_it(storage: ObjectStorage) -> None:
    base = f"renders/{uuid.uuid4()}"
    inside = [f"{base}/0.jpg", f"{base}/1.jpg", f"{base}/thumbs/0.jpg"]
    # A sibling that shares the prefix's characters but not its folder.
    outside = [f"{base}0/0.jpg", f"{base}.jpg"]
    await asyncio.gather(
        *(storage.put_bytes(BUCKET, key, b"x", "image/jpeg") for key in inside + outside)
    )

    assert await storage.remove_prefix(BUCKET, f"{base}/") == len(inside)
    assert await storage.list_keys(BUCKET, f"{base}/") == []
    assert sorted(await storage.list_keys(BUCKET, base)) == sorted(outside)
    # Again: nothing left, not an error.
    assert await storage.remove_prefix(BUCKET, f"{base}/") == 0


async def test_remove_prefix_refuses_a_prefix_that_is_not_a_folder(
    storage: ObjectStorage,
) -> None:
    with pytest.raises(ValueError, match="must end with '/'"):
        await storage.remove_prefix(BUCKET, "renders/abc")


async def test_an_open_stream_reads_the_object_chunk_by_chunk(storage: ObjectStorage) -> None:
    data = os.urandom(300 * 1024)
    key = f"streams/{uuid.uuid4()}.bin"
    await storage.put_bytes(BUCKET, key, data, "application/octet-stream")

    stream = await storage.open_stream(BUCKET, key, chunk_bytes=64 * 1024)
    assert stream is not None
    try:
        chunks = [chunk async for chunk in stream.chunks()]
    finally:
        await stream.aclose()

    assert stream.size == len(data)
    assert b"".join(chunks) == data
    assert [len(chunk) for chunk in chunks] == [64 * 1024] * 4 + [44 * 1024]
    assert stream.chunks_read == 5
    assert stream.closed
    assert await storage.open_stream(BUCKET, f"streams/{uuid.uuid4()}.bin") is None


@contextlib.asynccontextmanager
async def _refusing_endpoint(status: int) -> AsyncIterator[ObjectStorage]:
    """A client of an endpoint that answers every request ``status`` with an HTML page,
    as a proxy's rate limit or a load balancer in front of an S3 server does."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            page = b"<html><body>Too Many Requests</body></html>"
            writer.write(
                b"HTTP/1.1 %d Refused\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (status, len(page), page)
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = S3Settings.model_validate(
        {"S3_ENDPOINT": f"127.0.0.1:{port}", "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "secret-key"}
    )
    try:
        yield ObjectStorage(settings, timeout_seconds=2.0)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("status", [403, 429])
async def test_an_error_answer_without_s3_xml_is_a_storage_error(status: int) -> None:
    """Every caller expects StorageError; minio raises other types for such answers."""
    calls: list[Callable[[ObjectStorage], Awaitable[object]]] = [
        lambda storage: storage.remove_prefix(BUCKET, "renders/x/"),
        lambda storage: storage.remove(BUCKET, ["a.jpg"]),
        lambda storage: storage.list_keys(BUCKET, "renders/"),
        lambda storage: storage.stat(BUCKET, "a.jpg"),
        lambda storage: storage.get_bytes(BUCKET, "a.jpg", 1024),
        lambda storage: storage.open_stream(BUCKET, "a.jpg"),
        lambda storage: storage.ensure_bucket(BUCKET),
    ]
    async with _refusing_endpoint(status) as storage:
        for call in calls:
            with pytest.raises(StorageError):
                await call(storage)
