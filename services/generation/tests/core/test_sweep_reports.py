"""Two instances' sweeps settling one job at once: done once, logged and counted once;
and what a poll logs.

Nothing stops two replicas' passes from reading the same settlement candidate; the usage
service's idempotency keeps the books right (the second call is a replay), and the job's
own conditional updates decide which instance reports the settlement.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import text
from structlog.testing import capture_logs

from generation.domain import refresh, sweep
from services.generation.tests.core.stack import Core


def _settlements(operation: str, outcome: str) -> float:
    labels = {"operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("generation_settlements_total", labels) or 0.0


async def _backdate(core: Core, job_id: str, **states: str) -> None:
    """Put the job back in a state the settlement step retries (an answer was lost)."""
    assignments = ", ".join(f"{column} = :{column}" for column in states)
    async with core.app.context.sessions() as session, session.begin():
        await session.execute(
            text(
                f"UPDATE generation_jobs SET {assignments},"  # noqa: S608 (column names are ours)
                " updated_at = now() - interval '1 minute' WHERE id = :id"
            ),
            {**states, "id": uuid.UUID(job_id)},
        )


async def _two_sweeps_settle(core: Core) -> int:
    """What two sweeps do when both read the candidates before either settled them;
    returns how many settlements they report (what ``_settle`` counts)."""
    ctx = core.app.context
    async with ctx.transactions() as tx:
        candidates = await tx.jobs.needing_settlement(ctx.clock.now(), 50)
    assert candidates
    reported = 0
    for job in candidates:
        reported += sum(
            await asyncio.gather(sweep._settle_one(ctx, job), sweep._settle_one(ctx, job))
        )
    return reported


async def test_a_lost_debit_answer_settled_twice_is_reported_once(core: Core) -> None:
    owner = uuid.uuid4()
    job = (await core.submit(owner)).job
    await _backdate(core, job.id, charge_state="none")  # recorded at usage, not here
    debited = _settlements("debit", "done")

    with capture_logs() as logs:
        reported = await _two_sweeps_settle(core)

    assert (await core.outcome(owner, job.id)).charged
    lines = [line for line in logs if line["event"] == "ledger.debited"]
    assert [line["status"] for line in lines] == ["starting"]
    assert _settlements("debit", "done") - debited == 1
    assert reported == 1


async def test_a_pending_refund_settled_twice_is_reported_once(core: Core) -> None:
    owner = uuid.uuid4()
    job = (await core.submit(owner)).job
    await core.apply_webhook(job.prediction_id, "failed")  # refunded at once
    await _backdate(core, job.id, refund_state="pending")  # recorded at usage, not here
    refunded = _settlements("refund", "done")

    with capture_logs() as logs:
        reported = await _two_sweeps_settle(core)

    assert (await core.outcome(owner, job.id)).refunded
    assert len([line for line in logs if line["event"] == "ledger.refunded"]) == 1
    assert _settlements("refund", "done") - refunded == 1
    assert reported == 1


async def test_a_poll_logs_the_jobs_status_and_the_providers_beside_it(core: Core) -> None:
    """``status`` in a job's log lines is always the job's: a poll that finds the run
    succeeded after the job was canceled says canceled, with the provider's beside it."""
    owner = uuid.uuid4()
    job = (await core.submit(owner)).job
    await core.advance(job.prediction_id, "succeeded")  # its webhook never applied
    await _backdate(core, job.id, status="canceled")
    ctx = core.app.context
    async with ctx.reads() as stores:
        row = await stores.jobs.get(uuid.UUID(job.id))
    assert row is not None

    with capture_logs() as logs:
        await refresh.poll_and_apply(ctx, row, job.prediction_id, source="sweep")

    [polled] = [line for line in logs if line["event"] == "job.polled"]
    assert (polled["status"], polled["providerStatus"]) == ("canceled", "succeeded")


async def _shown(core: Core, job_id: str) -> tuple[object, ...]:
    """What a change of the job must bump: its version, with its updatedAt."""
    async with core.app.context.sessions() as session:
        row = (
            await session.execute(
                text("SELECT version, updated_at FROM generation_jobs WHERE id = :id"),
                {"id": uuid.UUID(job_id)},
            )
        ).one()
    return tuple(row)


async def test_settling_a_charge_changes_neither_the_version_nor_updated_at(core: Core) -> None:
    """A charge or its settlement is bookkeeping: not part of the job as shown, so the
    feed gives it no version, and updatedAt must not move without one either (a stream
    would keep a message whose id now stands for another body)."""
    owner = uuid.uuid4()
    running = (await core.submit(owner)).job
    await _backdate(core, running.id, charge_state="none")  # its debit's answer was lost
    failed = (await core.submit(uuid.uuid4())).job
    await core.apply_webhook(failed.prediction_id, "failed")
    await _backdate(core, failed.id, charge_state="none")
    before = [await _shown(core, job.id) for job in (running, failed)]

    ctx = core.app.context
    async with ctx.transactions() as tx:
        candidates = await tx.jobs.needing_settlement(ctx.clock.now(), 50)
    for job in candidates:
        await sweep._settle_one(ctx, job)

    assert (await core.outcome(owner, running.id)).charged
    assert [await _shown(core, job.id) for job in (running, failed)] == before


async def test_give_backs_come_first_in_a_settlement_batch(core: Core) -> None:
    """A late debit the plan refuses may only be waiting for one of its owner's
    give-backs: older debits must not crowd that give-back out of the batch."""
    debit = (await core.submit(uuid.uuid4())).job  # in flight, its debit's answer lost
    give_back = (await core.submit(uuid.uuid4())).job
    await core.apply_webhook(give_back.prediction_id, "failed")
    ages = ((debit, timedelta(hours=1)), (give_back, timedelta(minutes=1)))
    for job, age in ages:  # the debit is older
        async with core.app.context.sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE generation_jobs SET charge_state = 'none',"
                    " updated_at = :at WHERE id = :id"
                ),
                {"at": datetime.now(UTC) - age, "id": uuid.UUID(job.id)},
            )
    ctx = core.app.context

    async with ctx.transactions() as tx:
        first = await tx.jobs.needing_settlement(ctx.clock.now(), 1)

    assert [str(job.id) for job in first] == [give_back.id]
