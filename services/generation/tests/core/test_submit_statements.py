"""A submission's writes to generation's database: one statement each, no transaction.

The job's insert, the prediction's attach and the charge are single statements sent
in autocommit (no BEGIN/COMMIT round trips), and the answer is the row the last of
them returned, not a read after it. Counted on the service's own engine; the charge's
one statement keeps the two-step meaning it replaced (record the debit, then ask for
the refund of a job that ended meanwhile), checked on the real table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from generation.domain.states import ChargeState, JobStatus, RefundState
from interior.generation.v1 import generation_pb2 as pb
from services.generation.tests.core.stack import Core
from services.generation.tests.rpc.fakes import imagine_job


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement the engine sends while the block runs, BEGIN and COMMIT included."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    def begin(conn: Any) -> None:
        # SQLAlchemy reports a logical begin in autocommit too; the driver sends none.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            sent.append("BEGIN")

    def commit(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            sent.append("COMMIT")

    sync_engine = engine.sync_engine
    listeners = (("before_cursor_execute", record), ("begin", begin), ("commit", commit))
    for name, listener in listeners:
        event.listen(sync_engine, name, listener)
    try:
        yield sent
    finally:
        for name, listener in listeners:
            event.remove(sync_engine, name, listener)


def _engine(core: Core) -> AsyncEngine:
    engine = core.app.context.sessions.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    return engine


async def test_a_submission_writes_in_three_statements_and_reads_nothing_back(
    core: Core,
) -> None:
    owner = uuid.uuid4()
    with statements_sent(_engine(core)) as sent:
        submitted = await core.submit(owner)
    # The in-flight pre-check, then insert, attach and charge: no BEGIN, COMMIT or re-read.
    assert sent == ["SELECT", "INSERT", "UPDATE", "UPDATE"]
    shown = await core.get(owner, submitted.job.id)
    assert submitted.job.prediction_id == shown.prediction_id != ""
    assert submitted.job.status == shown.status == pb.JOB_STATUS_STARTING
    assert submitted.job.updated_at == shown.updated_at
    assert submitted.job.version == shown.version
    outcome = await core.outcome(owner, submitted.job.id)
    assert (outcome.charged, outcome.refunded) == (True, False)


async def test_charging_a_job_that_ended_meanwhile_requests_its_refund_once(core: Core) -> None:
    ctx = core.app.context
    job = imagine_job(uuid.uuid4())
    now = datetime.now(UTC)
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
    async with ctx.transactions() as tx:
        ended = await tx.jobs.mark_ended_without_output(
            job.id, JobStatus.FAILED, "PROVIDER_FAILED", "failed", now
        )
    assert (ended.changed, ended.refund_due) == (True, False)  # nothing charged yet

    async with ctx.statements() as stores:
        first = await stores.jobs.mark_charged(job.id, now)
        second = await stores.jobs.mark_charged(job.id, now)
    assert first.refund_due
    assert first.job is not None
    assert (first.job.charge_state, first.job.refund_state) == (
        ChargeState.CHARGED,
        RefundState.PENDING,
    )
    assert (second.job, second.refund_due) == (None, False)  # already recorded


async def test_charging_a_running_job_records_it_and_asks_no_refund(core: Core) -> None:
    ctx = core.app.context
    job = imagine_job(uuid.uuid4())
    now = datetime.now(UTC)
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
        charged = await stores.jobs.mark_charged(job.id, now)
        again = await stores.jobs.mark_charged(job.id, now)
        waived_job = imagine_job(uuid.uuid4())
        await stores.jobs.insert(waived_job)
        await stores.jobs.mark_charge_waived(waived_job.id, now)
        waived = await stores.jobs.mark_charged(waived_job.id, now)
    assert charged.job is not None
    assert not charged.refund_due
    assert (charged.job.status, charged.job.charge_state, charged.job.refund_state) == (
        JobStatus.STARTING,
        ChargeState.CHARGED,
        RefundState.NONE,
    )
    assert (again.job, again.refund_due) == (None, False)
    assert (waived.job, waived.refund_due) == (None, False)  # a waived job is never charged
