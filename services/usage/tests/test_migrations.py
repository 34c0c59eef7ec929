"""The first migration: idempotent, and the database itself enforces the ledger rules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from usage.persistence.models import metadata
from usage.wiring import migrate

SCHEMA_SNAPSHOT = """
SELECT conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid IN ('usage_ledger'::regclass, 'profiles'::regclass)
UNION ALL
SELECT indexname || ':' || indexdef FROM pg_indexes WHERE tablename IN ('usage_ledger', 'profiles')
UNION ALL
SELECT 'trigger:' || tgname FROM pg_trigger WHERE tgrelid = 'usage_ledger'::regclass
   AND NOT tgisinternal
ORDER BY 1
"""

INSERT = text(
    "INSERT INTO usage_ledger (owner_id, kind, amount, job_id, idempotency_key, reason) "
    "VALUES (:owner, :kind, :amount, :job, :key, 'test')"
)


@pytest.fixture(scope="module")
async def engine(database_factory: Callable[[str], str]) -> AsyncIterator[AsyncEngine]:
    url = database_factory("usage_mig")
    await migrate(url)
    engine = create_async_engine(url)
    yield engine
    await engine.dispose()


async def _snapshot(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(SCHEMA_SNAPSHOT))).scalars())


async def test_upgrade_head_twice_is_a_noop(engine: AsyncEngine) -> None:
    before = await _snapshot(engine)

    await migrate(engine.url.render_as_string(hide_password=False))

    assert await _snapshot(engine) == before
    async with engine.connect() as connection:
        versions = (await connection.execute(text("SELECT * FROM alembic_version_usage"))).all()
    assert versions == [("20261207_0004",)]
    assert (
        "ck_usage_ledger_kind:CHECK ((kind = ANY (ARRAY['debit'::text, 'credit'::text])))" in before
    )
    assert any(item.startswith("ux_usage_ledger_debit_job_id:") for item in before)
    assert any(item.startswith("ix_usage_ledger_owner_id_created_at:") for item in before)


async def test_models_match_the_migration(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": "alembic_version_usage",
                "compare_server_default": True,
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def _insert(engine: AsyncEngine, **row: Any) -> None:
    values = {"owner": uuid.uuid4(), "kind": "debit", "amount": 1, "job": uuid.uuid4()}
    values |= {"key": f"k-{uuid.uuid4()}"} | row
    async with engine.begin() as connection:
        await connection.execute(INSERT, values)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"key": "same-key"}, {"key": "same-key"}, id="duplicate idempotency key"),
        pytest.param({"job": "J"}, {"job": "J"}, id="second debit for a job"),
        pytest.param(
            {"job": "J", "kind": "credit"}, {"job": "J", "kind": "credit"}, id="second credit"
        ),
        pytest.param({}, {"kind": "bonus"}, id="unknown kind"),
        pytest.param({}, {"amount": 0}, id="zero amount"),
        pytest.param({}, {"amount": -1}, id="negative amount"),
        pytest.param({}, {"key": ""}, id="empty key"),
        pytest.param({}, {"key": "k" * 201}, id="key too long"),
    ],
)
async def test_constraints_refuse_bad_rows(
    engine: AsyncEngine, first: dict[str, Any], second: dict[str, Any]
) -> None:
    job = uuid.uuid4()
    first = {k: job if v == "J" else v for k, v in first.items()}
    second = {k: job if v == "J" else v for k, v in second.items()}
    if first.get("key") == "same-key":
        first["key"] = second["key"] = f"same-{job}"
    await _insert(engine, **first)

    with pytest.raises(IntegrityError):
        await _insert(engine, **second)


async def test_a_debit_and_a_credit_of_one_job_may_coexist(engine: AsyncEngine) -> None:
    job = uuid.uuid4()
    await _insert(engine, job=job, kind="debit")
    await _insert(engine, job=job, kind="credit")

    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM usage_ledger WHERE job_id = :job"), {"job": job}
        )
    assert count == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE usage_ledger SET amount = 5 WHERE job_id = :job",
        "DELETE FROM usage_ledger WHERE job_id = :job",
        # Row triggers do not fire for TRUNCATE (migration 20261207_0003).
        "TRUNCATE usage_ledger",
    ],
)
async def test_the_ledger_is_append_only(engine: AsyncEngine, statement: str) -> None:
    job = uuid.uuid4()
    await _insert(engine, job=job)

    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(text(statement), {"job": job})
