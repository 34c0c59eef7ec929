"""Debits and credits are idempotent, and a refund comes back exactly once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine


async def test_a_retried_debit_is_a_replay_and_writes_nothing(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()
    first = await usage.debit(owner, job, key="submit-1")

    again = await usage.debit(owner, job, key="submit-1")

    assert (first.recorded, first.replayed) == (True, False)
    assert (again.recorded, again.replayed) == (True, True)
    assert again.quota.used == first.quota.used == 1
    assert await count_entries(usage_sql, job, "debit") == 1


async def test_another_key_for_a_debited_job_is_a_replay(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()
    await usage.debit(owner, job, key="first-key")

    again = await usage.debit(owner, job, key="second-key")

    assert again.replayed is True
    assert again.quota.used == 1
    assert await count_entries(usage_sql, job, "debit") == 1


async def test_a_replay_is_answered_even_when_nothing_is_left(
    usage, clock, new_id: Callable[[], str], plans
) -> None:
    owner, jobs = new_id(), [new_id() for _ in range(plans["free"].monthly_generations)]
    for job in jobs:
        await usage.debit(owner, job)

    again = await usage.debit(owner, jobs[-1])

    assert (again.replayed, again.quota.remaining) == (True, 0)


async def test_a_key_reused_for_another_job_is_refused(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job, other_job = new_id(), new_id(), new_id()
    await usage.debit(owner, job, key="reused-key-" + job)

    error = await usage.error_of(usage.debit(owner, other_job, key="reused-key-" + job))

    assert (error.code, error.reason) == ("IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_REUSED")
    assert await count_entries(usage_sql, other_job, "debit") == 0


async def test_a_credit_gives_the_generation_back_once(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()
    await usage.debit(owner, job)

    first = await usage.credit(owner, job, key="refund-1")
    again = await usage.credit(owner, job, key="refund-1")
    other_key = await usage.credit(owner, job, key="refund-2")

    assert (first.recorded, first.replayed, first.quota.used) == (True, False, 0)
    assert (again.recorded, again.replayed, again.quota.used) == (True, True, 0)
    assert (other_key.recorded, other_key.replayed) == (True, True)
    assert await count_entries(usage_sql, job, "credit") == 1


async def test_a_credit_for_a_job_never_debited_writes_nothing(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()

    result = await usage.credit(owner, job)

    assert (result.recorded, result.replayed) == (False, False)
    assert await count_entries(usage_sql, job, "credit") == 0


async def test_a_debit_after_a_credit_found_no_debit_writes_nothing(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    """The credit settled the job without a charge (generation records it waived); a
    debit of it arriving later (a call cut off after it was sent) would be a charge
    nothing gives back, so it is refused, quietly, however often it comes."""
    owner, job = new_id(), new_id()
    assert (await usage.credit(owner, job)).recorded is False

    late = await usage.debit(owner, job)
    again = await usage.debit(owner, job, key="another-key")

    for answer in (late, again):
        assert (answer.recorded, answer.replayed, answer.quota.used) == (False, False, 0)
    assert await count_entries(usage_sql, job, "debit") == 0
    assert (await usage.credit(owner, job)).recorded is False


async def test_a_credit_naming_another_owner_voids_nothing_of_the_real_owner(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    """An operator's Credit with a mistyped owner, for a job not debited yet, must not
    cancel the job's real charge (a free generation, answered without an error)."""
    owner, stranger, job = new_id(), new_id(), new_id()
    assert (await usage.credit(stranger, job)).recorded is False

    debit = await usage.debit(owner, job)

    assert (debit.recorded, debit.quota.used) == (True, 1)
    assert await count_entries(usage_sql, job, "debit") == 1
    # The real owner's own settlement still voids its own job, and is kept apart.
    other = new_id()
    assert (await usage.credit(stranger, other)).recorded is False
    assert (await usage.credit(owner, other)).recorded is False
    assert (await usage.debit(owner, other)).recorded is False


async def test_nobody_refunds_another_users_job(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, stranger, job = new_id(), new_id(), new_id()
    await usage.debit(owner, job)

    result = await usage.credit(stranger, job)

    assert result.recorded is False
    assert await count_entries(usage_sql, job, "credit") == 0
    assert (await usage.quota(owner)).used == 1


async def test_a_refund_restores_the_month_of_its_debit(
    usage, clock, new_id: Callable[[], str], plans
) -> None:
    owner, monthly = new_id(), plans["free"].monthly_generations
    clock.current = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)
    october_job = new_id()
    await usage.debit(owner, october_job)
    clock.current = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    await usage.debit(owner, new_id())

    refund = await usage.credit(owner, october_job)

    # November keeps its own count: the October refund does not inflate it.
    assert (refund.recorded, refund.quota.used, refund.quota.remaining) == (True, 1, monthly - 1)
    clock.current = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert (await usage.quota(owner)).used == 0
