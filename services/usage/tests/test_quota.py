"""Plans, limits and periods, through a real usage gRPC server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from interior.usage.v1 import usage_pb2
from kit.runtime_config import Plan


def _at(quota_stamp: Timestamp) -> datetime:
    return quota_stamp.ToDatetime(tzinfo=UTC)


async def test_a_new_user_is_on_free_with_the_whole_month_left(
    usage, clock, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    quota = await usage.quota(new_id())

    assert (quota.plan, quota.price_id) == ("free", "")
    assert quota.monthly_generations == plans["free"].monthly_generations
    assert (quota.used, quota.remaining) == (0, plans["free"].monthly_generations)
    assert _at(quota.period_start) == datetime(2026, 10, 1, tzinfo=UTC)
    assert _at(quota.period_end) == datetime(2026, 11, 1, tzinfo=UTC)


async def test_free_plan_limit_is_enforced(
    usage, clock, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    owner, monthly = new_id(), plans["free"].monthly_generations
    for taken in range(1, monthly + 1):
        result = await usage.debit(owner, new_id())
        assert (result.recorded, result.replayed) == (True, False)
        assert (result.quota.used, result.quota.remaining) == (taken, monthly - taken)

    error = await usage.error_of(usage.debit(owner, new_id()))

    assert (error.code, error.reason) == ("LIMIT_EXCEEDED", "LIMIT_EXCEEDED")
    assert error.details == {"periodEnd": "2026-11-01T00:00:00.000Z"}
    quota = await usage.quota(owner)
    assert (quota.used, quota.remaining) == (monthly, 0)


async def test_a_paid_plan_has_its_own_limit(
    usage, clock, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    owner, monthly = new_id(), plans["price_basic"].monthly_generations
    quota = await usage.set_plan(owner, "price_basic")
    assert (quota.plan, quota.price_id, quota.remaining) == ("basic", "price_basic", monthly)

    for _ in range(monthly):
        await usage.debit(owner, new_id())
    error = await usage.error_of(usage.debit(owner, new_id()))

    assert error.code == "LIMIT_EXCEEDED"
    quota = await usage.quota(owner)
    assert (quota.plan, quota.used, quota.remaining) == ("basic", monthly, 0)


async def test_a_new_month_starts_from_zero(
    usage, clock, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    owner, monthly = new_id(), plans["free"].monthly_generations
    clock.current = datetime(2026, 10, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    for _ in range(monthly):
        await usage.debit(owner, new_id())
    assert (await usage.error_of(usage.debit(owner, new_id()))).code == "LIMIT_EXCEEDED"

    clock.current = datetime(2026, 11, 1, tzinfo=UTC)
    quota = await usage.quota(owner)
    result = await usage.debit(owner, new_id())

    assert (quota.used, quota.remaining) == (0, monthly)
    assert _at(quota.period_start) == datetime(2026, 11, 1, tzinfo=UTC)
    assert _at(quota.period_end) == datetime(2026, 12, 1, tzinfo=UTC)
    assert (result.quota.used, result.quota.remaining) == (1, monthly - 1)


async def test_the_year_rolls_over_in_december(usage, clock, new_id: Callable[[], str]) -> None:
    clock.current = datetime(2026, 12, 31, 8, 0, tzinfo=UTC)

    result = await usage.debit(new_id(), new_id())

    assert _at(result.quota.period_start) == datetime(2026, 12, 1, tzinfo=UTC)
    assert _at(result.quota.period_end) == datetime(2027, 1, 1, tzinfo=UTC)


async def test_a_retired_price_falls_back_to_free(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str]
) -> None:
    owner = new_id()
    async with usage_sql.begin() as connection:
        await connection.execute(
            text("INSERT INTO profiles (owner_id, price_id) VALUES (:owner, 'price_retired')"),
            {"owner": owner},
        )

    quota = await usage.quota(owner)

    assert (quota.plan, quota.price_id) == ("free", "")


@pytest.mark.parametrize(
    ("owner", "job", "key", "field"),
    [
        pytest.param("not-a-uuid", None, "k", "owner_id", id="bad owner"),
        pytest.param(None, "123", "k", "job_id", id="bad job"),
        pytest.param(None, None, "", "idempotency_key", id="empty key"),
        pytest.param(None, None, "   ", "idempotency_key", id="blank key"),
        pytest.param(None, None, "k" * 201, "idempotency_key", id="key too long"),
        pytest.param(None, None, "k\x00", "idempotency_key", id="key with control character"),
    ],
)
async def test_bad_debits_are_refused_and_write_nothing(
    usage,
    usage_sql: AsyncEngine,
    count_entries,
    new_id: Callable[[], str],
    owner: str | None,
    job: str | None,
    key: str,
    field: str,
) -> None:
    job_id = job or new_id()
    request = usage_pb2.DebitRequest(
        owner_id=owner or new_id(), job_id=job_id, idempotency_key=key, reason="generation"
    )

    error = await usage.error_of(usage.stub.Debit(request, timeout=10))

    assert (error.code, error.reason) == ("VALIDATION_ERROR", "VALIDATION_ERROR")
    assert error.details.get("field") == field
    if job is None:
        assert await count_entries(usage_sql, job_id, "debit") == 0


async def test_pending_jobs_count_unless_the_ledger_holds_or_voided_them(
    usage, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    """Generation names the jobs it saw succeed without seeing their debit recorded:
    one debited (its answer was lost) counts once, one voided never, the rest once."""
    owner, monthly = new_id(), plans["free"].monthly_generations
    debited, voided, missing = new_id(), new_id(), new_id()
    await usage.debit(owner, debited)
    assert (await usage.credit(owner, voided)).recorded is False  # voided: never debited

    plain = await usage.quota(owner)
    named = await usage.quota(owner, [debited, voided, missing, missing])
    others = await usage.quota(new_id(), [debited])

    assert (plain.used, plain.remaining, plain.pending_jobs_counted) == (1, monthly - 1, False)
    assert (named.used, named.remaining, named.pending_jobs_counted) == (2, monthly - 2, True)
    assert (others.used, others.remaining) == (0, monthly)  # held by the ledger: not counted
    # Voided for another owner only: still to come for this one.
    elsewhere = new_id()
    assert (await usage.credit(new_id(), elsewhere)).recorded is False
    assert (await usage.quota(owner, [voided, elsewhere])).used == 2


@pytest.mark.parametrize(
    "pending", [["not-a-uuid"], [str(uuid.uuid4()) for _ in range(101)]], ids=["bad", "101"]
)
async def test_get_quota_refuses_bad_pending_jobs(usage, pending: list[str]) -> None:
    error = await usage.error_of(usage.quota(str(uuid.uuid4()), pending))

    assert (error.code, error.details.get("field")) == ("VALIDATION_ERROR", "pending_job_ids")


async def test_get_quota_refuses_a_bad_owner(usage) -> None:
    error = await usage.error_of(usage.quota(str(uuid.uuid4())[:-1]))

    assert error.code == "VALIDATION_ERROR"
