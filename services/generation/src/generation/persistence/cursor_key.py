"""The key that signs history page tokens, shared by every instance through the database.

The first instance to start writes a random key; every later one (and any racing it)
reads that one, once, at its start. A token signed by one instance is so accepted by
every other. Rotating it: delete the row, then restart every instance.
"""

from __future__ import annotations

import asyncio
import secrets

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import session_scope

KEY_BYTES = 32

_CREATE = text(
    "INSERT INTO history_cursor_keys (id, key) VALUES (1, :key) ON CONFLICT (id) DO NOTHING"
)
_READ = text("SELECT key FROM history_cursor_keys WHERE id = 1")


async def load_cursor_key(sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The shared key, written first when there is none yet."""
    async with session_scope(sessions) as session:
        # A racing instance's insert is waited for and then does nothing; the read that
        # follows (a statement of its own, READ COMMITTED) sees the winner's key.
        await session.execute(_CREATE, {"key": secrets.token_bytes(KEY_BYTES)})
        key: bytes = (await session.execute(_READ)).scalar_one()
    return bytes(key)


class CursorKeySource:
    """The shared key, read on first use (not at start: the service starts, and answers
    UNAVAILABLE, while its database is down) and kept for the life of the process."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await load_cursor_key(self._sessions)
        return self._key
