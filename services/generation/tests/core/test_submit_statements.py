"""A submission's writes to generation's database: one statement each, no transaction.

The job's insert, the prediction's attach and the charge are single statements sent
in autocommit (no BEGIN/COMMIT round trips), and the answer is the row the last of
them returned, not a read after it. Counted on the service's own engine; the charge's
one statement keeps the two-step meaning it replaced (record the debit, then ask for
the refund of a job that ended meanwhile), checked on the real table.

Then the database's own guards on a job's statements, each called in the state a domain
pre-check would have hidden (a mutation review found them deletable unnoticed): terminal
statuses final, no run adopted by an ended job, no waive over a recorded debit, one poll
per throttle window, and a late debit's refund sent at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from generation.domain.records import NewJob
from generation.domain.settlement import charge
from generation.domain.states import ChargeState, JobStatus, RefundState
from generation.domain.sweep import sweep_jobs_once
from interior.generation.v1 import generation_pb2 as pb
from kit.db import session_scope
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
        first = await stores.jobs.mark_charged(job.id)
        second = await stores.jobs.mark_charged(job.id)
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
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
        charged = await stores.jobs.mark_charged(job.id)
        again = await stores.jobs.mark_charged(job.id)
        waived_job = imagine_job(uuid.uuid4())
        await stores.jobs.insert(waived_job)
        await stores.jobs.mark_charge_waived(waived_job.id)
        waived = await stores.jobs.mark_charged(waived_job.id)
    assert charged.job is not None
    assert not charged.refund_due
    assert (charged.job.status, charged.job.charge_state, charged.job.refund_state) == (
        JobStatus.STARTING,
        ChargeState.CHARGED,
        RefundState.NONE,
    )
    assert (again.job, again.refund_due) == (None, False)
    assert (waived.job, waived.refund_due) == (None, False)  # a waived job is never charged


async def test_the_first_run_named_is_the_jobs_and_a_failed_create_spares_it(core: Core) -> None:
    """The create's answer and the run's webhook race to attach a run (run_claims): the
    first one wins, a second name is refused, and ending the job for a failed create
    spares a job whose run was named meanwhile."""
    ctx = core.app.context
    job = imagine_job(uuid.uuid4())
    now = datetime.now(UTC)
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
        first = await stores.jobs.attach_prediction(job.id, "run-first", now)
        second = await stores.jobs.attach_prediction(job.id, "run-second", now)
    async with ctx.transactions() as tx:
        spared = await tx.jobs.mark_ended_without_output(
            job.id, JobStatus.FAILED, "UPSTREAM_ERROR", "lost", now, unless_attached=True
        )
        current = await tx.jobs.get(job.id)
    assert first is not None
    assert first.prediction_id == "run-first"
    assert second is None
    assert not spared.changed
    assert current is not None
    assert (current.status, current.prediction_id) == (JobStatus.STARTING, "run-first")

    unnamed = imagine_job(uuid.uuid4())
    async with ctx.statements() as stores:
        await stores.jobs.insert(unnamed)
    async with ctx.transactions() as tx:
        ended = await tx.jobs.mark_ended_without_output(
            unnamed.id, JobStatus.FAILED, "UPSTREAM_ERROR", "lost", now, unless_attached=True
        )
    assert ended.changed


async def _stored_job(
    core: Core, owner: uuid.UUID, status: str, charge: str, predicted: bool
) -> NewJob:
    """A job of ``owner`` in the given states, last changed five minutes ago (past the
    sweep's settling delay)."""
    ctx = core.app.context
    job = imagine_job(owner)
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
    async with session_scope(ctx.sessions) as session:
        await session.execute(
            text(
                "UPDATE generation_jobs SET status = :status, charge_state = :charge,"
                " prediction_id = :prediction, updated_at = :at WHERE id = :id"
            ),
            {
                "status": status,
                "charge": charge,
                "prediction": f"p-{job.id.hex}" if predicted else None,
                "at": datetime.now(UTC) - timedelta(minutes=5),
                "id": job.id,
            },
        )
    return job


async def test_admission_counts_the_succeeded_jobs_whose_debit_is_pending(core: Core) -> None:
    """One statement answers both: a job in flight, and how many succeeded jobs of the
    owner reached the provider without their debit recorded (the sweep's to charge)."""
    ctx = core.app.context
    owner, other = uuid.uuid4(), uuid.uuid4()
    rows = {
        # (owner, status, charge_state, has a prediction): counted?
        "deferred": (owner, "succeeded", "none", True),
        "deferred too": (owner, "succeeded", "none", True),
        "charged": (owner, "succeeded", "charged", True),
        "waived": (owner, "succeeded", "waived", True),
        "failed": (owner, "failed", "none", True),
        "never reached the provider": (owner, "failed", "none", False),
        "someone else's": (other, "succeeded", "none", True),
    }
    stored = {
        name: await _stored_job(core, job_owner, status, charge, predicted)
        for name, (job_owner, status, charge, predicted) in rows.items()
    }
    async with ctx.reads() as stores:
        facts = await stores.jobs.admission_facts(owner)
        unknown = await stores.jobs.admission_facts(uuid.uuid4())
    assert (facts.inflight, facts.pending_debits) == (False, 2)
    # Named, for the usage service to say which it holds after all.
    assert set(facts.pending_job_ids) == {stored["deferred"].id, stored["deferred too"].id}
    assert (unknown.inflight, unknown.pending_debits, unknown.pending_job_ids) == (False, 0, ())

    running = imagine_job(owner)
    async with ctx.statements() as stores:
        await stores.jobs.insert(running)
    async with ctx.reads() as stores:
        facts = await stores.jobs.admission_facts(owner)
    assert (facts.inflight, facts.pending_debits) == (True, 2)


async def test_a_voided_succeeded_job_is_waived_not_pending_for_ever(core: Core) -> None:
    """A succeeded job whose debit was deferred, then credited at the usage service (an
    operator's Credit: usage records the job voided, and will refuse its debit): the
    sweep's debit finds it voided and records it waived, so neither the sweep nor
    admission counts it as a debit still to come."""
    ctx = core.app.context
    owner = uuid.uuid4()
    job = await _stored_job(core, owner, "succeeded", "none", predicted=True)
    assert await ctx.usage.credit(owner, job.id, reason="operator") is False  # voided

    await sweep_jobs_once(ctx)

    async with ctx.reads() as stores:
        settled = await stores.jobs.get(job.id)
        facts = await stores.jobs.admission_facts(owner)
    assert settled is not None
    assert settled.charge_state == ChargeState.WAIVED
    assert facts.pending_debits == 0
    assert (await ctx.usage.quota(owner)).remaining == 10  # the free plan, untouched
    # The usage audit is told so: a succeeded job without a debit, on purpose.
    outcome = await core.outcome(owner, str(job.id))
    assert (outcome.charged, outcome.waived) == (False, True)


async def _ended(ctx: Any, status: JobStatus, owner: uuid.UUID | None = None) -> NewJob:
    """A job written, then ended ``status`` without output before anything was charged."""
    job = imagine_job(owner or uuid.uuid4())
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
    async with ctx.transactions() as tx:
        await tx.jobs.mark_ended_without_output(
            job.id, status, status.upper(), status.value, datetime.now(UTC)
        )
    return job


# The database's own guards, called in the states a domain pre-check would hide: a late
# event read before another writer ended the job, a waive racing a recorded debit.


async def test_a_late_processing_never_reopens_an_ended_job(core: Core) -> None:
    """``processing`` read while the job was starting, written after another applier
    ended it: the conditional update changes nothing (a terminal status is final, and
    the owner's in-flight slot stays free)."""
    ctx = core.app.context
    job = await _ended(ctx, JobStatus.CANCELED)
    now = datetime.now(UTC)
    async with ctx.transactions() as tx:
        reopened = await tx.jobs.mark_processing(job.id, now, now)
        current = await tx.jobs.get(job.id)
    assert not reopened
    assert current is not None
    assert current.status == JobStatus.CANCELED


async def test_a_waive_never_overwrites_a_recorded_debit(core: Core) -> None:
    """Another instance recorded the debit between this one's refused debit and its
    waive: the job stays charged (so it is refunded if it ends without output)."""
    ctx = core.app.context
    job = imagine_job(uuid.uuid4())
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
        await stores.jobs.mark_charged(job.id)
        await stores.jobs.mark_charge_waived(job.id)
        current = await stores.jobs.get(job.id)
    assert current is not None
    assert current.charge_state == ChargeState.CHARGED


async def test_a_debit_landing_after_its_job_ended_is_given_back_at_once(core: Core) -> None:
    """The job ended (failed, nothing charged) while its debit was in flight: the debit's
    answer records the charge and the refund goes straight out, not at the sweep's next
    pass (the sweep is off here)."""
    ctx = core.app.context
    owner = uuid.uuid4()
    before = (await ctx.usage.quota(owner)).remaining
    job = await _ended(ctx, JobStatus.FAILED, owner)
    async with ctx.reads() as stores:
        ended = await stores.jobs.get(job.id)
    assert ended is not None

    await charge(ctx, ended)

    async with ctx.reads() as stores:
        current = await stores.jobs.get(job.id)
    assert current is not None
    assert (current.charge_state, current.refund_state) == (ChargeState.CHARGED, RefundState.DONE)
    assert (await ctx.usage.quota(owner)).remaining == before


async def test_a_prediction_is_polled_at_most_once_per_throttle_window(core: Core) -> None:
    """Every instance's stale refresh asks for the right to poll; within one window only
    the first gets it, and the next window gives it again."""
    ctx = core.app.context
    job = imagine_job(uuid.uuid4())
    now, throttle = datetime.now(UTC), timedelta(seconds=5)
    async with ctx.statements() as stores:
        await stores.jobs.insert(job)
        await stores.jobs.attach_prediction(job.id, "pred-throttled", now)
    claims = []
    for at in (now, now, now + throttle / 2, now + throttle):
        async with ctx.transactions() as tx:
            claims.append(await tx.jobs.claim_poll(job.id, at, throttle))
    assert claims == [True, False, False, True]


async def test_an_ended_job_never_adopts_a_run(core: Core) -> None:
    """The owner canceled while the create was under way: the run's attach matches no
    row (it is then stopped as nobody's), and the job stays canceled without a run."""
    ctx = core.app.context
    job = await _ended(ctx, JobStatus.CANCELED)
    now = datetime.now(UTC)
    async with ctx.statements() as stores:
        attached = await stores.jobs.attach_prediction(job.id, "pred-late", now)
        current = await stores.jobs.get(job.id)
    assert attached is None
    assert current is not None
    assert (current.status, current.prediction_id) == (JobStatus.CANCELED, None)
