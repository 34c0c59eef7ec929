"""ObjectStorage.put_file against the real S3 server: objects of several parts, from a file."""

from __future__ import annotations

import os
import tempfile
import uuid

from kit.settings import S3Settings
from kit.storage import ObjectStorage
from testkit.plugin import S3Endpoint

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
