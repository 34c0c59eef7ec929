"""The sweep's queries read what they act on, not every job ever made.

Every pass (each ``sweep_interval``, in each instance) runs them on an idle system too:
a query that scans ``generation_jobs`` costs in proportion to the table, for ever. The
plans are read with EXPLAIN on a real, migrated PostgreSQL holding many settled jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from generation.persistence.repositories import JobRepository
from generation.wiring import MIGRATIONS
from kit.db import run_migrations

SETTLED_JOBS = 20_000

# Jobs as a busy month leaves them: succeeded and charged, failed and refunded.
_SEED = """
INSERT INTO generation_jobs (id, owner_id, request_fingerprint, mode, status, charge_state,
    refund_state, created_at, updated_at, completed_at, prediction_id)
SELECT gen_random_uuid(), gen_random_uuid(), 'f', 'imagine',
       CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 'charged',
       CASE WHEN n % 10 = 0 THEN 'done' ELSE 'none' END,
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
       'p' || n
  FROM generate_series(1, :rows) AS n
"""


def _scans(plan: dict[str, Any]) -> list[str]:
    found = [plan["Node Type"]] if plan.get("Relation Name") == "generation_jobs" else []
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def test_the_settlement_pass_reads_no_settled_job(
    database_factory: Callable[[str], str],
) -> None:
    """It asks for jobs whose refund is pending or that reached the provider without being
    charged; the second half had no index, so each pass read the whole table (at 300k
    jobs 56-80 ms and ~100 MB of buffers, with nothing to settle)."""
    url = database_factory("gen_sweep_plans")
    await run_migrations(MIGRATIONS, url)
    engine = create_async_engine(url)
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM generation_jobs" in statement and "refund_state" in statement:
            seen.append((statement, parameters))

    try:
        async with engine.begin() as connection:
            await connection.execute(text(_SEED), {"rows": SETTLED_JOBS})
            await connection.execute(text("ANALYZE generation_jobs"))
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session:
            older_than = datetime.now(UTC) - timedelta(seconds=10)
            assert await JobRepository(session).needing_settlement(older_than, 200) == []
            statement, parameters = seen[0]
            connection = await session.connection()
            explained = await connection.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters
            )
            value = explained.scalar_one()
    finally:
        await engine.dispose()
    plan = (json.loads(value) if isinstance(value, str) else value)[0]["Plan"]
    scans = _scans(plan)
    assert scans
    assert "Seq Scan" not in scans, scans
