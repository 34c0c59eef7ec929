"""The debit and the quota as one statement each: one round trip, and still atomic.

The round trips are counted on the service's own wiring of the ledger over a real
PostgreSQL; the concurrency goes through the real gRPC server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kit.clock import SystemClock
from kit.db import create_read_sessionmaker, create_sessionmaker
from kit.errors import LimitExceeded
from kit.grpc_errors import from_rpc_error
from kit.runtime_config import Plan
from usage.domain.ledger import LedgerService
from usage.domain.model import LedgerCommand
from usage.domain.plans import PlanCatalog
from usage.persistence.store import sql_reads, sql_statements, sql_transactions


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


@pytest.fixture
async def counted(usage_db: str) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    """An engine that records every statement it sends (BEGIN and COMMIT included)."""
    engine = create_async_engine(usage_db)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)

    def begin(conn: Any) -> None:
        # SQLAlchemy reports a logical begin in autocommit too; the driver sends none.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            sent.append("BEGIN")

    event.listen(engine.sync_engine, "begin", begin)
    yield engine, sent
    await engine.dispose()


def _ledger(engine: AsyncEngine, plans: dict[str, Plan]) -> LedgerService:
    """The ledger as usage.wiring builds it."""
    return LedgerService(
        sql_transactions(create_sessionmaker(engine)),
        PlanCatalog(plans),
        SystemClock(),
        reads=sql_reads(create_read_sessionmaker(engine)),
        statements=sql_statements(engine),
    )


def _command(owner: uuid.UUID, job: uuid.UUID | None = None) -> LedgerCommand:
    job = job or uuid.uuid4()
    return LedgerCommand.parse(str(owner), str(job), f"debit-{job}", "", "generation")


async def test_a_debit_a_replay_and_a_refusal_are_one_statement_each(
    counted: tuple[AsyncEngine, list[str]], plans: dict[str, Plan]
) -> None:
    engine, sent = counted
    ledger, owner = _ledger(engine, plans), uuid.uuid4()
    for _ in range(plans["free"].monthly_generations - 1):
        await ledger.debit(_command(owner))
    last = _command(owner)
    sent.clear()

    written = await ledger.debit(last)
    replayed = await ledger.debit(last)
    with pytest.raises(LimitExceeded):
        await ledger.debit(_command(owner))

    assert (written.replayed, replayed.replayed) == (False, True)
    assert written.quota.remaining == replayed.quota.remaining == 0
    # Three debits, three statements: no BEGIN, no COMMIT, no second query.
    assert len(sent) == 3, sent
    assert all("usage_debit" in statement for statement in sent)


async def test_simultaneous_debits_and_their_retries_never_pass_a_paid_quota(
    usage, usage_sql: AsyncEngine, new_id: Callable[[], str], plans: dict[str, Plan]
) -> None:
    owner, monthly = new_id(), plans["price_basic"].monthly_generations
    await usage.set_plan(owner, "price_basic")
    jobs = [new_id() for _ in range(3 * monthly)]

    # Every job twice, same key: one may be written, its twin must be its replay.
    results = await asyncio.gather(
        *(usage.debit(owner, job, key=f"k-{job}") for job in jobs + jobs),
        return_exceptions=True,
    )

    outcomes = Counter(_outcome(r) for r in results)
    assert outcomes["RECORDED"] == monthly
    assert outcomes["RECORDED"] + outcomes["REPLAYED"] + outcomes["LIMIT_EXCEEDED"] == 2 * len(jobs)
    assert await _debits_of(usage_sql, owner) == monthly
    assert (await usage.quota(owner)).remaining == 0


async def test_a_quota_is_one_statement(
    counted: tuple[AsyncEngine, list[str]], plans: dict[str, Plan]
) -> None:
    engine, sent = counted
    ledger, owner = _ledger(engine, plans), uuid.uuid4()
    await ledger.debit(_command(owner))
    sent.clear()

    quota = await ledger.get_quota(owner)
    unknown = await ledger.get_quota(uuid.uuid4())

    assert (quota.used, unknown.used, unknown.plan) == (1, 0, "free")
    assert quota.remaining == plans["free"].monthly_generations - 1
    assert len(sent) == 2, sent
