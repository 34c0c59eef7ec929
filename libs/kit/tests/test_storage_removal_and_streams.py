"""ObjectStorage.remove_prefix and open_stream against the real S3 server."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from kit.settings import S3Settings
from kit.storage import ObjectStorage
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
