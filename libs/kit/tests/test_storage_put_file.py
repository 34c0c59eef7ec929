"""ObjectStorage.put_file: against the real S3 server, and what it sends (a recorder)."""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

from kit.settings import S3Settings
from kit.storage import ObjectStorage, StorageError
from testkit.plugin import S3Endpoint
from testkit.recorder import RecordingServer

BUCKET = "kit-put-file"


async def test_a_file_larger_than_one_part_is_stored_byte_for_byte(s3_server: S3Endpoint) -> None:
    storage = ObjectStorage(S3Settings.model_validate(s3_server.env()))
    await storage.ensure_bucket(BUCKET)
    data = os.urandom(11 * 1024 * 1024)  # three 5 MiB parts, the last one short
    key = f"big/{uuid.uuid4()}.bin"
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
        spool.write(b"header to skip" + data)
        spool.seek(len(b"header to skip"))
        await storage.put_file(BUCKET, key, spool, len(data), "image/png")

    stored = await storage.stat(BUCKET, key)
    assert stored is not None
    assert (stored.size, stored.content_type) == (len(data), "image/png")
    assert await storage.get_bytes(BUCKET, key, max_bytes=len(data)) == data


def _recorded_storage(recorder: RecordingServer) -> ObjectStorage:
    settings = S3Settings(
        S3_ENDPOINT=f"127.0.0.1:{recorder.port}",
        S3_ACCESS_KEY="recorder-access",
        S3_SECRET_KEY="recorder-secret",
    )
    return ObjectStorage(settings)


async def test_a_file_is_one_unsigned_put_streamed_from_its_position() -> None:
    data = os.urandom(6 * 1024 * 1024)  # over one SDK part: still one request
    with RecordingServer("s3") as recorder, tempfile.TemporaryFile() as file:
        file.write(b"skip" + data + b"trailing bytes not asked for")
        file.seek(4)
        await _recorded_storage(recorder).put_file(BUCKET, "a/b.jpg", file, len(data), "image/jpeg")
        [put] = recorder.snapshot()

    assert put.method == "PUT"
    assert put.path.startswith(f"/{BUCKET}/a/b.jpg?")
    assert "X-Amz-Signature=" in put.path
    assert put.headers["content-type"] == "image/jpeg"
    assert put.body == data


async def test_a_5xx_is_retried_with_the_body_rewound() -> None:
    data = os.urandom(300 * 1024)
    with RecordingServer("s3") as recorder, tempfile.TemporaryFile() as file:
        recorder.statuses = [503]
        file.write(data)
        file.seek(0)
        await _recorded_storage(recorder).put_file(BUCKET, "k.png", file, len(data), "image/png")
        first, second = recorder.snapshot()

    assert first.body == second.body == data


async def test_a_refused_put_is_a_storage_error() -> None:
    with RecordingServer("s3") as recorder, tempfile.TemporaryFile() as file:
        recorder.statuses = [403]
        file.write(b"x" * 10)
        file.seek(0)
        with pytest.raises(StorageError, match="403"):
            await _recorded_storage(recorder).put_file(BUCKET, "k.png", file, 10, "image/png")


async def test_a_file_shorter_than_its_length_is_refused_before_sending() -> None:
    with RecordingServer("s3") as recorder, tempfile.TemporaryFile() as file:
        file.write(b"x" * 10)
        file.seek(2)
        with pytest.raises(ValueError, match="8 bytes"):
            await _recorded_storage(recorder).put_file(BUCKET, "k.png", file, 10, "image/png")
        assert recorder.snapshot() == []
