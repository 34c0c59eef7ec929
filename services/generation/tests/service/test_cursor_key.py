"""The history token key: one per database, whichever instance wrote it first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from generation.persistence.cursor_key import KEY_BYTES, CursorKeySource, load_cursor_key
from generation.wiring import MIGRATIONS
from kit.db import create_sessionmaker, run_migrations


async def test_every_instance_reads_the_key_the_first_one_wrote(
    database_factory: Callable[[str], str],
) -> None:
    url = database_factory("generation_cursor_key")
    await run_migrations(MIGRATIONS, url)
    engines = [create_async_engine(url) for _ in range(4)]
    try:
        # Four instances starting at once, then one restarting later.
        keys = await asyncio.gather(
            *(load_cursor_key(create_sessionmaker(engine)) for engine in engines)
        )
        later = await load_cursor_key(create_sessionmaker(engines[0]))
        async with engines[0].connect() as connection:
            rows = (
                await connection.execute(text("SELECT count(*) FROM history_cursor_keys"))
            ).scalar_one()
    finally:
        for engine in engines:
            await engine.dispose()

    assert len(set(keys)) == 1
    assert later == keys[0]
    assert len(keys[0]) == KEY_BYTES
    assert rows == 1


async def test_the_key_is_read_once_on_first_use(database_factory: Callable[[str], str]) -> None:
    """Not at start: a service whose database is down at start still starts."""
    url = database_factory("generation_cursor_key_lazy")
    await run_migrations(MIGRATIONS, url)
    engine = create_async_engine(url)
    try:
        source = CursorKeySource(create_sessionmaker(engine))
        first = await asyncio.gather(*(source() for _ in range(5)))
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM history_cursor_keys"))
        later = await source()  # kept: a rotation needs a restart
    finally:
        await engine.dispose()

    assert len(set(first)) == 1
    assert later == first[0]
