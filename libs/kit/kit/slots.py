"""A bounded number of things at once, with a short wait for a free one.

Both the edge (submissions whose bodies stream in) and generation (submissions whose
inputs spool on its disk) take one of a fixed number of slots for as long as the work
lasts. A caller that gets none within the wait is refused with ``TOO_MANY_REQUESTS``
(429 with Retry-After at the edge) instead of queueing without bound; a slot is given
back on every way out, cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kit.errors import TooManyRequests
from kit.logging import get_logger

log = get_logger(__name__)
BUSY_MESSAGE = "The service is busy. Please try again shortly."


class Slots:
    """At most ``limit`` holders at once; a caller waits ``wait_seconds`` for a slot."""

    def __init__(
        self, name: str, limit: int, wait_seconds: float, retry_after_seconds: int
    ) -> None:
        self.name = name
        self.limit = limit
        self._wait_seconds = wait_seconds
        self._retry_after_seconds = retry_after_seconds
        self._free = asyncio.Semaphore(limit)
        self._held = 0

    @property
    def held(self) -> int:
        """Slots taken now."""
        return self._held

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; :class:`TooManyRequests` when none came in time."""
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._free.acquire()
        except TimeoutError:
            log.warning("slots.busy", slots=self.name, held=self._held, limit=self.limit)
            raise TooManyRequests(
                BUSY_MESSAGE, retry_after_seconds=self._retry_after_seconds
            ) from None
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._free.release()
