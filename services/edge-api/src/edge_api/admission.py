"""Fair uploads: who may start reading an upload body, and how long they may wait.

An upload holds one of the edge's submission slots while its body streams in, so
one user with a slow connection could otherwise hold them all. Two limits keep
that fair: a per-user count of uploads in progress, checked before a slot is
even asked for (the excess is refused at once with 429), and a short wait for a
slot (a full edge answers 429 instead of queueing without bound). Both are
released on every way out, cancellation and client disconnects included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kit.errors import TooManyRequests
from kit.slots import Slots

_PER_USER_MESSAGE = "You already have uploads in progress. Please wait for them to finish."


class UploadAdmission:
    """The global submission slots and the per-user upload counts."""

    def __init__(
        self, slots: int, per_user: int, slot_wait_seconds: float, retry_after_seconds: int
    ) -> None:
        self._slots = Slots("edge.submissions", slots, slot_wait_seconds, retry_after_seconds)
        self._per_user = per_user
        self._retry_after = retry_after_seconds
        self._uploads: dict[str, int] = {}

    @asynccontextmanager
    async def admit(self, owner_id: str) -> AsyncIterator[None]:
        """Hold one of the user's uploads and one global slot for the block.

        TooManyRequests when the user already has ``per_user`` uploads in progress,
        or when no slot frees up within the slot wait.
        """
        held = self._uploads.get(owner_id, 0)
        if held >= self._per_user:
            raise TooManyRequests(_PER_USER_MESSAGE, retry_after_seconds=self._retry_after)
        self._uploads[owner_id] = held + 1
        try:
            async with self._slots.slot():
                yield
        finally:
            self._release_user(owner_id)

    def _release_user(self, owner_id: str) -> None:
        remaining = self._uploads[owner_id] - 1
        if remaining:
            self._uploads[owner_id] = remaining
        else:
            del self._uploads[owner_id]  # an idle user leaves nothing behind

    def slots_in_use(self) -> int:
        """How many global slots are held right now."""
        return self._slots.held

    def uploads_by_user(self) -> dict[str, int]:
        """A copy of the per-user counts (users with none are absent)."""
        return dict(self._uploads)
