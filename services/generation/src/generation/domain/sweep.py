"""The background sweep: recovers lost webhooks and finishes what was left half-done.

Each pass, on every instance:
1. ends jobs past ``overall_timeout_ms``: ``failed`` with TIMED_OUT, refunded, then
   canceled at the provider (in that order: its "canceled" webhook finds the job
   ended); a job stuck ``starting`` without a prediction id (the process died
   mid-submission) cannot move forward, so it is failed with INTERRUPTED after
   ``timings.unsubmitted_grace_ms``. On a loop of its own (:class:`Sweeper`), so that no
   recovery attempt delays it: a poll whose output will not download takes as long
   as the download's retries, and a pass polls up to 50 jobs. Every overdue job of a
   pass is ended first; the refunds and cancels follow, several at once and for one
   sweep interval at most, so a usage service or provider that does not answer delays
   no time-out by more than that;
2. polls in-flight jobs whose state has not moved for ``sweep_min_age_ms`` (a lost
   webhook), through the same per-prediction throttle as GET refreshes (every pass
   since has tried the jobs step 1 ended);
3. settles charges: retries pending refunds and debits that could not reach the
   usage service at the time, and gives back the debit of a job that ended without
   output while its debit went unanswered (the usage service may have recorded it);
4. removes what must leave storage and has not yet (see domain/cleanup.py): a
   deleted job's render files and inputs when the attempt right after the DELETE
   failed, files a late applier could not remove, and any outputs of a job that
   ended without them. On a loop of its own too, every interval whatever the other
   steps are doing: a DELETE's files must go within 60 s (with the default 15 s
   interval they are gone well within a minute once storage answers).

Safe with many instances: every claim is a conditional update and every usage
call is idempotent per job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

from generation import metrics
from generation.domain import jobs
from generation.domain.cleanup import sweep_deleted_files
from generation.domain.context import GenerationContext
from generation.domain.events import end_job
from generation.domain.records import Job
from generation.domain.refresh import poll_and_apply
from generation.domain.run_claims import cancel_quietly
from generation.domain.settlement import charge, refund, settle_unanswered_debit, waive_charge
from generation.domain.states import ENDED_WITHOUT_OUTPUT, JobStatus, RefundState
from kit import tracing
from kit.errors import LimitExceeded
from kit.logging import get_logger

log = get_logger("generation.sweep")

_BATCH = 50
# The refunds and provider cancels after a time-out pass's ends that run at once, and
# the least time they are given (else one sweep interval).
_FOLLOW_UPS_AT_ONCE = 10
_FOLLOW_UPS_MIN_SECONDS = 1.0
# Settlement waits a little so it does not race the request that is still running.
_SETTLE_AFTER = timedelta(seconds=10)


async def sweep_once(ctx: GenerationContext) -> dict[str, int]:
    """One whole pass: what the three loops of :class:`Sweeper` do, one after the other
    (storage removals, time-outs, then recovery and settlement); counts for tests."""
    removed = await sweep_files_once(ctx)
    timed_out = await sweep_timeouts_once(ctx)
    return {"timedOut": timed_out, **await sweep_jobs_once(ctx), "filesRemoved": removed}


async def sweep_timeouts_once(ctx: GenerationContext) -> int:
    """Step 1 of a pass (jobs past the overall timeout, or stuck unsubmitted)."""
    timed_out = await _end_overdue_jobs(ctx)
    if timed_out:
        log.info("sweep.timed_out", timedOut=timed_out)
    return timed_out


async def sweep_jobs_once(ctx: GenerationContext) -> dict[str, int]:
    """Steps 2 and 3 of a pass (recovery, settlement); returns counts for logs and tests."""
    counts = {
        "recovered": await _poll_quiet_jobs(ctx),
        "settled": await _settle(ctx),
    }
    if any(counts.values()):
        log.info("sweep.pass", **counts)
    # Each job the pass acted on was counted as it happened (metrics.sweep_acted): a step that
    # raises later must not take the earlier steps' work out of the metric.
    metrics.sweep_pass()
    return counts


async def sweep_files_once(ctx: GenerationContext) -> int:
    """Step 4 of a pass (storage removals); returns how many finished."""
    removed = await sweep_deleted_files(ctx)
    if removed:
        log.info("sweep.files_removed", filesRemoved=removed)
    return removed


async def _poll_quiet_jobs(ctx: GenerationContext) -> int:
    timings = ctx.config.timings
    now = ctx.clock.now()
    throttle = timedelta(milliseconds=timings.poll_throttle_ms)
    async with ctx.transactions() as tx:
        candidates = await tx.jobs.inflight_needing_poll(
            older_than=now - timedelta(milliseconds=timings.sweep_min_age_ms),
            poll_before=now - throttle,
            limit=_BATCH,
        )
    recovered = 0
    for job in candidates:
        if job.prediction_id is None:
            continue  # never: the query asks for a prediction id (the type cannot say so)
        async with ctx.transactions() as tx:
            if not await tx.jobs.claim_poll(job.id, now, throttle):
                continue  # another instance (or a GET) is polling it
        with (
            _isolated(job, "recover"),
            tracing.linked_span("generation.sweep.recover", job.traceparent, jobId=str(job.id)),
        ):
            if await poll_and_apply(ctx, job, job.prediction_id, source="sweep"):
                recovered += 1
                metrics.sweep_acted("recovered")
    return recovered


async def _end_overdue_jobs(ctx: GenerationContext) -> int:
    now = ctx.clock.now()
    timings = ctx.config.timings
    async with ctx.transactions() as tx:
        candidates = await tx.jobs.overdue_inflight(
            created_before=now - timedelta(milliseconds=timings.overall_timeout_ms),
            unsubmitted_before=now - timedelta(milliseconds=timings.unsubmitted_grace_ms),
            limit=_BATCH,
        )
    ended: list[tuple[Job, Job | None]] = []
    for job in candidates:
        with (
            _isolated(job, "time_out"),
            tracing.linked_span("generation.sweep.time_out", job.traceparent, jobId=str(job.id)),
        ):
            changed, refund_due = await _end_overdue(ctx, job)
            if changed:
                ended.append((job, refund_due))
    # Every overdue job is ended above, one statement each, its owner's slot free. What
    # follows waits on other services (the usage service's credit, the provider's
    # cancel: retried for tens of seconds while either is down), so it runs afterwards,
    # several at once, and for one sweep interval at most: the next pass, and the jobs
    # that went overdue meanwhile, do not wait for it. What is cut short is safe to
    # leave: a refund stays pending (the settlement retries it, idempotent per job), and
    # a run not canceled ends at its provider deadline (Cancel-After) at the latest.
    limit = asyncio.Semaphore(_FOLLOW_UPS_AT_ONCE)
    finished = 0

    async def follow_up(job: Job, refund_due: Job | None) -> None:
        nonlocal finished
        async with limit:
            with (
                _isolated(job, "time_out"),
                tracing.linked_span(
                    "generation.sweep.time_out_follow_up", job.traceparent, jobId=str(job.id)
                ),
            ):
                await _after_overdue_end(ctx, job, refund_due)
        finished += 1

    budget = max(ctx.config.timings.sweep_interval_ms / 1000, _FOLLOW_UPS_MIN_SECONDS)
    try:
        async with asyncio.timeout(budget):
            await asyncio.gather(*(follow_up(job, refund_due) for job, refund_due in ended))
    except TimeoutError:
        log.warning("sweep.time_out_follow_ups_cut", left=len(ended) - finished)
    return len(ended)


async def _end_overdue(ctx: GenerationContext, job: Job) -> tuple[bool, Job | None]:
    """Whether this pass ended the overdue ``job`` (not another writer first), and the
    job as ended when its refund is due (see :func:`end_job`)."""
    unsubmitted = job.prediction_id is None
    error = jobs.INTERRUPTED if unsubmitted else jobs.TIMED_OUT
    # A run adopted from its webhook since the read (domain/run_claims.py) is followed
    # from now on, within the overall timeout, like any other run.
    ended = await end_job(ctx, job, error, jobs.FAILED, unless_attached=unsubmitted)
    changed, refund_due = ended.changed, ended.to_refund
    if not changed:
        return False, None
    log.warning(
        "job.transition",
        **jobs.log_fields(job, jobs.FAILED),
        source="sweep",
        reason=error.code,
    )
    metrics.job_transition(jobs.FAILED, "sweep")
    metrics.sweep_acted("timed_out")
    return True, refund_due


async def _after_overdue_end(ctx: GenerationContext, job: Job, refund_due: Job | None) -> None:
    """The refund of a job the time-out ended, then its run's cancel at the provider."""
    if refund_due is not None:
        await refund(ctx, refund_due)
    if job.prediction_id is not None:
        # Only once the job has ended: the provider answers a cancel with a "canceled"
        # webhook, which would otherwise reach the job first and end it canceled.
        # Best effort: the run must not finish after we gave up (ended, timed out).
        await cancel_quietly(ctx, job.prediction_id, job, jobs.FAILED)


async def _settle(ctx: GenerationContext) -> int:
    async with ctx.transactions() as tx:
        candidates = await tx.jobs.needing_settlement(ctx.clock.now() - _SETTLE_AFTER, _BATCH)
    settled = 0
    # Give-backs come first (JobStore.needing_settlement): a late debit refused for the
    # plan may only have lacked one of them (see _refused_for_the_plan).
    for job in candidates:
        with _isolated(job, "settle"):
            if await _settle_one(ctx, job):
                settled += 1
                metrics.sweep_acted("settled")
    return settled


async def _settle_one(ctx: GenerationContext, job: Job) -> int:
    """1 when the job's charge or refund is settled now (not when it was deferred again)."""
    if job.refund_state == RefundState.PENDING:
        return int(await refund(ctx, job))
    if job.status in ENDED_WITHOUT_OUTPUT:
        return int(await settle_unanswered_debit(ctx, job))
    try:
        # None: the usage service could not be reached (deferred to the next pass), or
        # the debit was recorded already; either way this pass settled nothing.
        charged = await charge(ctx, job)
    except LimitExceeded:
        await _refused_for_the_plan(ctx, job)
        return 0
    return int(charged is not None)


async def _refused_for_the_plan(ctx: GenerationContext, job: Job) -> None:
    """A late debit (the submission could not reach the usage service) was refused: the
    plan is used up, or shrank since the submission.

    While another job of the owner still has a generation to give back, the refusal may
    not stand: the debit is asked again next pass, after that give-back. Otherwise a job
    still in flight ends failed (OVER_LIMIT) and its run is stopped, as a submission's
    refused debit does: no render past the plan (the next pass settles it as a job that
    ended without output: a credit that finds no debit). A job whose run already made
    its render keeps it, never charged.
    """
    async with ctx.reads() as stores:
        postponed = await stores.jobs.gives_back_due(job.owner_id, job.id)
    if postponed:
        log.info("ledger.debit_postponed", **jobs.log_fields(job), cause="give_back_due")
        return
    ended = (await end_job(ctx, job, jobs.OVER_LIMIT, jobs.FAILED)).changed
    if ended:
        log.warning("job.debit_refused", **jobs.log_fields(job, jobs.FAILED))
        metrics.job_transition(jobs.FAILED, "sweep")
        if job.prediction_id is not None:
            await cancel_quietly(ctx, job.prediction_id, job, jobs.FAILED)
        return
    async with ctx.reads() as stores:
        current = await stores.jobs.get(job.id)
    if current is not None and current.status == JobStatus.SUCCEEDED:
        await waive_charge(ctx, current)


@contextlib.contextmanager
def _isolated(job: Job, step: str) -> Iterator[None]:
    """A fault no step expects, in one job, is logged and skipped: the pass goes on with
    the other jobs (the job is tried again by the next pass)."""
    try:
        yield
    except Exception as error:
        log.error("sweep.job_failed", **jobs.log_fields(job), step=step, error=type(error).__name__)
        metrics.SWEEP_FAILURES.inc()


class Sweeper:
    """Runs the time-outs (:func:`sweep_timeouts_once`), the recovery and settlement of
    jobs (:func:`sweep_jobs_once`) and the storage removals (:func:`sweep_files_once`)
    every ``sweep_interval_ms``, each on its own loop, until stopped: a pass that polls
    jobs whose outputs will not download lasts as long as all their retries, and
    neither a time-out nor a DELETE's files may wait for it."""

    def __init__(self, ctx: GenerationContext) -> None:
        self._ctx = ctx
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        steps = {
            "generation-sweep": sweep_jobs_once,
            "generation-sweep-timeouts": sweep_timeouts_once,
            "generation-sweep-files": sweep_files_once,
        }
        self._tasks = [
            asyncio.create_task(self._every_interval(step), name=name)
            for name, step in steps.items()
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _every_interval(self, step: Callable[[GenerationContext], Awaitable[object]]) -> None:
        interval = self._ctx.config.timings.sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await step(self._ctx)
            except Exception:  # one bad pass must not stop recovery for good
                log.exception("sweep.failed", step=step.__name__)
                metrics.SWEEP_FAILURES.inc()
