"""A job's success (status, render, variants) is one statement: one round trip, atomic.

Counted on the service's own stores over a real, migrated PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from generation.domain.jobs import VariantRef, render_id_for, thumbnail_key, variant_key
from generation.persistence.store import sql_reads
from generation.wiring import MIGRATIONS
from kit.db import create_read_sessionmaker, run_migrations

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


@pytest.fixture
async def counted(
    database_factory: Callable[[str], str],
) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    """A migrated database and an engine that records every statement (BEGIN too)."""
    url = database_factory("gen_success")
    await run_migrations(MIGRATIONS, url)
    engine = create_async_engine(url)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    def begin(conn: Any) -> None:
        # SQLAlchemy reports a logical begin in autocommit too; the driver sends none.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            sent.append("BEGIN")

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    event.listen(engine.sync_engine, "begin", begin)
    yield engine, sent
    await engine.dispose()


async def _processing_job(engine: AsyncEngine) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO generation_jobs (id, owner_id, request_fingerprint, mode, style, "
                "prompt, input_keys, status, charge_state, refund_state, created_at, "
                "updated_at, prediction_id) VALUES (:id, :owner, :fingerprint, 'redesign', "
                "'japandi', 'p', '[]', 'processing', 'charged', 'none', :now, :now, :prediction)"
            ),
            {
                "id": job_id,
                "owner": uuid.uuid4(),
                "fingerprint": "f" * 64,
                "now": NOW,
                "prediction": f"p{job_id.hex[:20]}",
            },
        )
    return job_id


async def _state(engine: AsyncEngine, job_id: uuid.UUID) -> tuple[str, int, int]:
    """(status, renders, variants) of the job."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT j.status, count(DISTINCT r.id), count(v.id) FROM generation_jobs j "
                    "LEFT JOIN renders r ON r.job_id = j.id "
                    "LEFT JOIN render_variants v ON v.render_id = r.id "
                    "WHERE j.id = :id GROUP BY j.status"
                ),
                {"id": job_id},
            )
        ).one()
    return row[0], row[1], row[2]


def _variants(render_id: uuid.UUID, *, key_length: int = 0) -> list[VariantRef]:
    key = variant_key(render_id, 0) + "x" * key_length
    return [VariantRef(0, key, thumbnail_key(render_id, 0), 1024, 768)]


async def test_a_success_is_one_statement_without_begin_or_commit(
    counted: tuple[AsyncEngine, list[str]],
) -> None:
    engine, sent = counted
    job_id = await _processing_job(engine)
    render_id = render_id_for(job_id)
    async with engine.connect() as connection:
        version_before = await connection.scalar(
            text("SELECT version FROM generation_jobs WHERE id = :id"), {"id": job_id}
        )
    sent.clear()

    async with sql_reads(create_read_sessionmaker(engine))() as stores:
        changed = await stores.jobs.mark_succeeded(
            job_id, render_id, _variants(render_id), NOW, NOW
        )

    assert changed
    assert len(sent) == 1
    assert "BEGIN" not in sent
    assert not any("COMMIT" in s.upper() for s in sent)
    assert await _state(engine, job_id) == ("succeeded", 1, 1)
    async with engine.connect() as connection:
        # The feed sees the change: the job's version moved and was recorded.
        version = await connection.scalar(
            text("SELECT version FROM generation_jobs WHERE id = :id"), {"id": job_id}
        )
        recorded = await connection.scalar(
            text("SELECT max(version) FROM job_events WHERE job_id = :id"), {"id": job_id}
        )
    assert version > version_before
    assert recorded == version


async def test_a_repeat_changes_nothing(counted: tuple[AsyncEngine, list[str]]) -> None:
    engine, _ = counted
    job_id = await _processing_job(engine)
    render_id = render_id_for(job_id)
    opener = sql_reads(create_read_sessionmaker(engine))
    async with opener() as stores:
        assert await stores.jobs.mark_succeeded(job_id, render_id, _variants(render_id), NOW, NOW)

    async with opener() as stores:
        again = await stores.jobs.mark_succeeded(job_id, render_id, _variants(render_id), NOW, NOW)

    assert not again
    assert await _state(engine, job_id) == ("succeeded", 1, 1)


async def test_a_failing_variant_leaves_the_job_in_flight_without_a_render(
    counted: tuple[AsyncEngine, list[str]],
) -> None:
    # All or nothing without a transaction around it: a variant the table refuses (a
    # key over its 200 characters) undoes the status and the render as well.
    engine, _ = counted
    job_id = await _processing_job(engine)
    render_id = render_id_for(job_id)

    with pytest.raises(DBAPIError):
        async with sql_reads(create_read_sessionmaker(engine))() as stores:
            await stores.jobs.mark_succeeded(
                job_id, render_id, _variants(render_id, key_length=300), NOW, NOW
            )

    assert await _state(engine, job_id) == ("processing", 0, 0)
