"""How many submissions one generation instance takes at once.

A submission spools its inputs on this instance's disk (the upload, then its cleaned
copy: up to four files of the upload limit) and waits its turn at the decode workers.
Each edge replica caps what it forwards, but the edges spread their calls over every
instance and scale apart from them, so without a cap of its own one instance could be
sent the sum: past its disk budget (an emptyDir's size limit in Kubernetes) the pod is
evicted with every job it holds. A submission beyond the cap waits a moment for a
slot, then is refused with ``TOO_MANY_REQUESTS`` (the edge's 429 with Retry-After)
before any of its inputs' bytes are stored, and answered like every refusal (the
sender told to stop, its stream drained: see api/intake.py). A submission that
declares no input (an idea in words, a refinement of an earlier render) spools nothing
and takes no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from kit.errors import TooManyRequests
from kit.logging import get_logger

log = get_logger(__name__)


class SubmissionSlots:
    """At most ``limit`` submissions at once; a caller waits ``wait_seconds`` for one."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self._wait_seconds = wait_seconds
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
            log.warning("submission.busy", held=self._held, limit=self.limit)
            raise TooManyRequests(
                "The service is busy. Please try again shortly.",
                retry_after_seconds=max(1, math.ceil(self._wait_seconds)),
            ) from None
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._free.release()
