"""History reads at 1k and at 100k rows: one owner's first page and a cursor page.

``python -m bench --only history`` (a minute or two). A real PostgreSQL is started
in a temporary directory, migrated, and given one owner with 60 jobs among synthetic
finished jobs of many owners (``bench.seed``). The same reads as GET
/api/v1/generations (``load_job_page``: the page, then its variants) are timed at
1k rows and again after topping the table up to ``large_rows``; the figure is the
p50 at the large size over the p50 at 1k (target <= 1.15: the keyset index keeps a
page's cost flat however many jobs exist).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.seed import top_up
from generation.persistence.models import GenerationJob
from generation.persistence.views import load_job_page
from generation.wiring import MIGRATIONS
from kit.db import create_read_sessionmaker, run_migrations, session_scope
from launcher.components import PostgresServer, free_port

OWNER_JOBS = 60
PAGE = 20
READS = 400


async def _owner_jobs(url: str, owner: uuid.UUID) -> None:
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with session_scope(sessions) as session:
            session.add_all(
                GenerationJob(
                    id=uuid.uuid4(),
                    owner_id=owner,
                    request_fingerprint="f" * 64,
                    mode="imagine",
                    status="failed" if i % 3 else "canceled",
                    charge_state="none",
                    refund_state="none",
                    created_at=now - timedelta(minutes=i),
                    updated_at=now,
                )
                for i in range(OWNER_JOBS)
            )
    finally:
        await engine.dispose()


async def _p50_ms(url: str, owner: uuid.UUID) -> float:
    engine = create_async_engine(url, pool_size=2)
    readers = create_read_sessionmaker(engine)
    samples: list[float] = []
    try:
        async with readers() as session:
            first = await load_job_page(session, owner, None, None, PAGE + 1)
        cursor = (first[PAGE - 1].created_at, first[PAGE - 1].id)
        for index in range(READS):
            before = None if index % 2 == 0 else cursor
            started = time.perf_counter()
            async with readers() as session:
                await load_job_page(session, owner, None, before, PAGE + 1)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await engine.dispose()
    return statistics.median(samples[READS // 10 :])  # the first reads warm the cache


async def measure(large_rows: int) -> dict[str, Any]:
    """The history p50 at 1k rows and at ``large_rows``, and their ratio."""
    with tempfile.TemporaryDirectory(prefix="bench-history-") as directory:
        server = PostgresServer(Path(directory) / "pg", free_port())
        server.start()
        try:
            server.create_database("history")
            url = server.url("history")
            dsn = url.replace("postgresql+asyncpg://", "postgresql://")
            await run_migrations(MIGRATIONS, url)
            owner = uuid.uuid4()
            await _owner_jobs(url, owner)
            small_rows = await top_up(dsn, 1_000)
            small = await _p50_ms(url, owner)
            large_total = await top_up(dsn, large_rows)
            large = await _p50_ms(url, owner)
        finally:
            server.stop()
    return {
        "history_p50_ratio": round(large / small, 3),
        "history_p50_ms": {str(small_rows): round(small, 3), str(large_total): round(large, 3)},
    }


if __name__ == "__main__":
    print(asyncio.run(measure(100_000)))
