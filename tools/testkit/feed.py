"""Generation's LISTEN connections, seen from the database: found, frozen, ended.

The change feed's faults the suites play (a failover, a NAT's idle timeout, a server
process that stops answering) are played on these connections' server processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generation.persistence.feed import APPLICATION_NAME
from kit.db import session_scope

_THEIRS = "WHERE application_name = :name AND datname = current_database()"


async def listen_backends(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """The server processes of every generation instance's LISTEN connection."""
    async with session_scope(sessions) as session:
        rows = await session.execute(
            text(f"SELECT pid FROM pg_stat_activity {_THEIRS}"),  # noqa: S608 - a constant
            {"name": APPLICATION_NAME},
        )
        return [int(pid) for pid in rows.scalars()]


async def end_listen_connections(sessions: async_sessionmaker[AsyncSession]) -> None:
    """End every LISTEN connection, as a database failover would."""
    async with session_scope(sessions) as session:
        await session.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity {_THEIRS}"),  # noqa: S608
            {"name": APPLICATION_NAME},
        )


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Those server processes stopped: their sockets open, nothing heard (a NAT's idle
    timeout, a failover without a reset), until the block ends."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
