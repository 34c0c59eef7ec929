"""The ledger under simultaneous calls, through a real gRPC server.

These are the proofs that usage never exceeds the plan and that one job is
charged and refunded at most once, whatever the callers do at the same time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kit.grpc_errors import from_rpc_error


async def _debits_of(engine: AsyncEngine, owner: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM usage_ledger WHERE owner_id = :owner AND kind = 'debit'"),
            {"owner": owner},
        )
    return int(count)


def _outcome(result: object) -> str:
    if isinstance(result, grpc.aio.AioRpcError):
        return from_rpc_error(result).code
    if isinstance(result, BaseException):
        raise result
    return "REPLAYED" if result.replayed else "RECORDED"  # type: ignore[attr-defined]


async def test_fifty_simultaneous_debits_take_exactly_what_is_left(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str], plans
) -> None:
    owner, monthly = new_id(), plans["free"].monthly_generations
    for _ in range(monthly - 3):
        await usage.debit(owner, new_id())
    assert (await usage.quota(owner)).remaining == 3

    results = await asyncio.gather(
        *(usage.debit(owner, new_id()) for _ in range(50)), return_exceptions=True
    )

    assert Counter(_outcome(r) for r in results) == {"RECORDED": 3, "LIMIT_EXCEEDED": 47}
    assert await _debits_of(usage_sql, owner) == monthly
    quota = await usage.quota(owner)
    assert (quota.used, quota.remaining) == (monthly, 0)


async def test_twenty_simultaneous_retries_of_one_debit_write_one_row(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()

    results = await asyncio.gather(
        *(usage.debit(owner, job, key=f"retry-{job}") for _ in range(20)), return_exceptions=True
    )

    assert Counter(_outcome(r) for r in results) == {"RECORDED": 1, "REPLAYED": 19}
    assert await count_entries(usage_sql, job, "debit") == 1
    assert (await usage.quota(owner)).used == 1


async def test_twenty_simultaneous_refunds_of_one_job_write_one_credit(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()
    await usage.debit(owner, job)

    # Half retry one key, half come with keys of their own: still one refund.
    keys = [f"refund-{job}"] * 10 + [f"refund-{job}-{n}" for n in range(10)]
    results = await asyncio.gather(
        *(usage.credit(owner, job, key=key) for key in keys), return_exceptions=True
    )

    assert Counter(_outcome(r) for r in results) == {"RECORDED": 1, "REPLAYED": 19}
    assert all(r.recorded for r in results)  # type: ignore[union-attr]
    assert await count_entries(usage_sql, job, "credit") == 1
    assert (await usage.quota(owner)).used == 0


async def test_one_key_raced_by_several_users_is_used_once(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str]
) -> None:
    # Different users are not serialized by the profile lock: the unique key is.
    key, owners, jobs = (
        f"shared-{new_id()}",
        [new_id() for _ in range(10)],
        [new_id() for _ in range(10)],
    )

    results = await asyncio.gather(
        *(usage.debit(o, j, key=key) for o, j in zip(owners, jobs, strict=True)),
        return_exceptions=True,
    )

    assert Counter(_outcome(r) for r in results) == {"RECORDED": 1, "IDEMPOTENCY_KEY_REUSED": 9}
    assert sum([await _debits_of(usage_sql, owner) for owner in owners]) == 1


async def test_a_debit_racing_the_credit_of_its_job_ends_charged_and_refunded_or_neither(
    usage, usage_sql: AsyncEngine, count_entries, new_id: Callable[[], str]
) -> None:
    """Generation's sweep credits a job whose debit went unanswered while that debit is
    still on its way: whichever comes second sees the other (both lock the owner's
    profile), so no debit is left that nothing gives back."""
    owner = new_id()
    jobs = [new_id() for _ in range(10)]

    results = await asyncio.gather(
        *(call for job in jobs for call in (usage.debit(owner, job), usage.credit(owner, job)))
    )

    for job, (debit, credit) in zip(
        jobs, zip(results[::2], results[1::2], strict=True), strict=True
    ):
        debits = await count_entries(usage_sql, job, "debit")
        credits = await count_entries(usage_sql, job, "credit")
        if credit.recorded:
            assert (debit.recorded, debits, credits) == (True, 1, 1)
        else:
            assert (debit.recorded, debits, credits) == (False, 0, 0)
    assert (await usage.quota(owner)).used == 0


async def _blocked_by_the_profile_lock(
    usage_sql: AsyncEngine, owner: str, call: Callable[[], Awaitable[object]]
) -> object:
    """Run ``call`` while another transaction holds the owner's profile row: it must wait
    for that lock (each ledger write serializes on it, which is what keeps a plan from
    being overspent: fifty debits at once rarely land in the microseconds between one
    debit's count and its insert, so this proves the lock directly), then go through."""
    async with usage_sql.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM profiles WHERE owner_id = :owner FOR UPDATE"), {"owner": owner}
        )
        pending = asyncio.ensure_future(call())
        await asyncio.sleep(0.5)
        assert not pending.done(), "the ledger write did not wait for the owner's profile lock"
        await held.rollback()
    return await asyncio.wait_for(pending, 10)


async def test_a_debit_waits_for_the_owners_profile_lock(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str]
) -> None:
    owner = new_id()
    await usage.debit(owner, new_id())  # the profile row exists
    result = await _blocked_by_the_profile_lock(
        usage_sql, owner, lambda: usage.debit(owner, new_id())
    )
    assert _outcome(result) == "RECORDED"


async def test_a_credit_waits_for_the_owners_profile_lock(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str]
) -> None:
    owner, job = new_id(), new_id()
    await usage.debit(owner, job)
    result = await _blocked_by_the_profile_lock(usage_sql, owner, lambda: usage.credit(owner, job))
    assert _outcome(result) == "RECORDED"
