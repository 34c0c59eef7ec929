"""The migrations hold every constraint and index the invariants and reads rely on;
later ones keep data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from generation.persistence.models import Base
from generation.wiring import MIGRATIONS
from kit.db import _alembic_config, run_migrations


@pytest.fixture
async def engine(database_factory: Callable[[str], str]) -> AsyncIterator[AsyncEngine]:
    url = database_factory("gen_migrations")
    await run_migrations(MIGRATIONS, url)
    await run_migrations(MIGRATIONS, url)  # twice: a no-op
    engine = create_async_engine(url)
    yield engine
    await engine.dispose()


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(
                    sync, opts={"compare_server_default": True, "compare_type": True}
                ),
                Base.metadata,
            )
        )
    # The version table is Alembic's own, not a model.
    assert [
        d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("alembic"))
    ] == []


def _job(owner: uuid.UUID, status: str, key: str | None = None) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "owner": owner,
        "key": key,
        "status": status,
        "now": now,
    }


_INSERT_JOB = text(
    "INSERT INTO generation_jobs (id, owner_id, idempotency_key, request_fingerprint, mode,"
    " status, created_at, updated_at) VALUES (:id, :owner, :key, 'f', 'imagine', :status,"
    " :now, :now)"
)


async def _insert(engine: AsyncEngine, row: dict[str, object]) -> None:
    async with engine.begin() as connection:
        await connection.execute(_INSERT_JOB, row)


async def test_one_inflight_job_per_owner(engine: AsyncEngine) -> None:
    owner = uuid.uuid4()
    await _insert(engine, _job(owner, "starting"))
    with pytest.raises(IntegrityError, match="uq_generation_jobs_one_inflight_per_owner"):
        await _insert(engine, _job(owner, "processing"))
    await _insert(engine, _job(owner, "succeeded"))
    await _insert(engine, _job(owner, "failed"))
    await _insert(engine, _job(uuid.uuid4(), "processing"))


async def test_idempotency_key_unique_per_owner(engine: AsyncEngine) -> None:
    owner = uuid.uuid4()
    await _insert(engine, _job(owner, "succeeded", key="k"))
    with pytest.raises(IntegrityError, match="uq_generation_jobs_owner_key"):
        await _insert(engine, _job(owner, "failed", key="k"))
    await _insert(engine, _job(uuid.uuid4(), "failed", key="k"))


async def test_unknown_status_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError, match="status_known"):
        await _insert(engine, _job(uuid.uuid4(), "exploded"))


async def test_one_render_per_job_and_one_variant_per_index(engine: AsyncEngine) -> None:
    row = _job(uuid.uuid4(), "succeeded")
    await _insert(engine, row)
    render = {"id": uuid.uuid4(), "job": row["id"], "owner": row["owner"]}
    insert_render = text(
        "INSERT INTO renders (id, job_id, owner_id, mode) VALUES (:id, :job, :owner, 'imagine')"
    )
    async with engine.begin() as connection:
        await connection.execute(insert_render, render)
    with pytest.raises(IntegrityError, match="uq_renders_job_id"):
        async with engine.begin() as connection:
            await connection.execute(insert_render, {**render, "id": uuid.uuid4()})
    insert_variant = text(
        "INSERT INTO render_variants (id, render_id, idx, object_key)"
        " VALUES (:id, :render, 0, 'renders/x/0.jpg')"
    )
    async with engine.begin() as connection:
        await connection.execute(insert_variant, {"id": uuid.uuid4(), "render": render["id"]})
    with pytest.raises(IntegrityError, match="uq_render_variants_render_idx"):
        async with engine.begin() as connection:
            await connection.execute(insert_variant, {"id": uuid.uuid4(), "render": render["id"]})


async def test_lookup_indexes_exist(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        names = set((await connection.execute(text("SELECT indexname FROM pg_indexes"))).scalars())
    assert {
        "uq_generation_jobs_prediction_id",
        "ix_generation_jobs_owner_history",
        "ix_generation_jobs_owner_status_history",
        "uq_generation_jobs_one_inflight_per_owner",
        "ix_renders_owner_created",
    } <= names


async def test_only_the_version_sequence_exists(engine: AsyncEngine) -> None:
    # job_events.version and history_cursor_keys.id take given values (0012): a serial
    # default there would draw numbers that mean nothing for a forgotten value.
    async with engine.connect() as connection:
        sequences = await connection.execute(text("SELECT sequencename FROM pg_sequences"))
        defaults = await connection.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE column_default LIKE 'nextval%'"
            )
        )
        assert sorted(sequences.scalars()) == ["job_versions"]
        assert defaults.all() == [("generation_jobs", "version")]


async def _schema(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    query = text(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " UNION ALL SELECT tablename, indexname, indexdef, '', '' FROM pg_indexes"
        " WHERE schemaname = 'public' UNION ALL SELECT sequencename, '', '', '', ''"
        " FROM pg_sequences ORDER BY 1, 2, 3"
    )
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(query)]


async def test_downgrade_to_the_start_and_back_gives_the_same_schema(
    database_factory: Callable[[str], str],
) -> None:
    url = database_factory("gen_round_trip")
    await run_migrations(MIGRATIONS, url)
    engine = create_async_engine(url)
    try:
        before = await _schema(engine)
        config = _alembic_config(MIGRATIONS, url)
        await asyncio.to_thread(command.downgrade, config, "0001")
        assert await _schema(engine) != before
        await run_migrations(MIGRATIONS, url)
        assert await _schema(engine) == before
    finally:
        await engine.dispose()


async def test_renders_deleted_before_0003_get_their_files_removed(
    database_factory: Callable[[str], str],
) -> None:
    url = database_factory("gen_backfill")
    config = _alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "0001")
    engine = create_async_engine(url)
    try:
        deleted, kept = _job(uuid.uuid4(), "succeeded"), _job(uuid.uuid4(), "succeeded")
        for row, deleted_at in ((deleted, datetime.now(UTC)), (kept, None)):
            await _insert(engine, row)
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO renders (id, job_id, owner_id, mode, deleted_at)"
                        " VALUES (:id, :job, :owner, 'imagine', :deleted_at)"
                    ),
                    {
                        "id": uuid.uuid4(),
                        "job": row["id"],
                        "owner": row["owner"],
                        "deleted_at": deleted_at,
                    },
                )

        await run_migrations(MIGRATIONS, url)

        async with engine.connect() as connection:
            due: dict[Any, Any] = dict(
                (
                    await connection.execute(
                        text(
                            "SELECT id, files_due_at IS NOT NULL AND deleted_at IS NOT NULL"
                            " FROM generation_jobs"
                        )
                    )
                ).all()
            )
        assert due == {deleted["id"]: True, kept["id"]: False}
    finally:
        await engine.dispose()
