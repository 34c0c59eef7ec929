"""Everything the generation flows need, built once by the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from generation.domain.decoder import ImageDecoder
from generation.domain.ports import Transactions, UsageGateway
from generation.domain.provider import ImageProvider
from kit.clock import Clock
from kit.runtime_config import RuntimeConfig
from kit.storage import ObjectStorage


@dataclass(frozen=True)
class GenerationContext:
    # Transactions (every write goes through these).
    transactions: Transactions
    # Stores on autocommit connections of the same pool, for reads that need no snapshot.
    reads: Transactions
    # The same autocommit stores, for a write that is one statement (its own
    # transaction: no BEGIN and COMMIT round trips): the submission's insert, attach and
    # charge, a job's success (JobStore.mark_succeeded).
    statements: Transactions
    provider: ImageProvider
    storage: ObjectStorage
    usage: UsageGateway
    config: RuntimeConfig
    clock: Clock
    private_bucket: str
    public_bucket: str
    # Public base URL reaching the webhook gateway; None: use the request's own base URL.
    webhook_base_url: str | None
    # Checks and cleans uploads in budgeted worker processes (started and stopped by wiring).
    decoder: ImageDecoder
    # The key that signs history page tokens, the same in every instance
    # (persistence.cursor_key: read from the database on first use).
    cursor_key: Callable[[], Awaitable[bytes]]
    # Thumbnails of stored outputs (from the delivery hosts only) are made in threads:
    # at most this many at once per process.
    thumbnail_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
