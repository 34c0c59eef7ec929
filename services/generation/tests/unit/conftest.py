"""Decode worker pools for the tests that need real workers (started, then stopped)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from generation.domain.decoder import ImageDecoder
from kit.runtime_config import Uploads


async def started(uploads: Uploads) -> AsyncIterator[ImageDecoder]:
    """A pool for ``uploads``, stopped when the iteration ends."""
    pool = ImageDecoder(uploads)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


@pytest.fixture
async def decoder() -> AsyncIterator[ImageDecoder]:
    """One worker with the default budgets."""
    async for pool in started(Uploads(decode_workers=1)):
        yield pool


@pytest.fixture
async def small_decoder() -> AsyncIterator[ImageDecoder]:
    """The smallest budget the config allows: about 95 MiB above an idle (lean) worker."""
    async for pool in started(Uploads(decode_workers=1, decode_memory_mib=128)):
        yield pool


@pytest.fixture
async def two_worker_decoder() -> AsyncIterator[ImageDecoder]:
    """Two workers, each a pool of its own."""
    async for pool in started(Uploads(decode_workers=2)):
        yield pool
