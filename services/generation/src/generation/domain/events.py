"""Applying provider state: ONE code path for webhooks, status refreshes and the sweep.

Repeat-safe and order-safe: statuses only move forward, a terminal status is
final, and every write is a conditional update or an insert that ignores
duplicates. Outputs are copied into our storage before the job is marked
``succeeded``, in the same transaction that inserts the render and its variants.
An applier that copied outputs but finds the job already ended removes them
again unless the job has a live render (see domain/cleanup.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import uuid

from generation import metrics
from generation.domain import jobs
from generation.domain.assets import store_render_variants
from generation.domain.cleanup import remove_render_files
from generation.domain.context import GenerationContext
from generation.domain.provider import (
    InvalidProviderPayload,
    OutputRefused,
    Prediction,
    ProviderError,
    ProviderStatus,
)
from generation.domain.records import Job, PendingFiles
from generation.domain.run_claims import claim_run
from generation.domain.settlement import refund
from generation.domain.states import INFLIGHT
from kit.errors import ValidationError
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.events")


class Outcome(enum.Enum):
    APPLIED = "applied"
    UNKNOWN_PREDICTION = "unknown_prediction"
    STALE = "stale"


# A provider event larger than this is no prediction (Replicate's are a few KiB).
MAX_EVENT_BYTES = 1024 * 1024


def parse_event(ctx: GenerationContext, payload: bytes) -> Prediction:
    """The prediction a provider event (a webhook's body) carries; ValidationError when it
    is too large or no prediction."""
    if len(payload) > MAX_EVENT_BYTES:
        raise ValidationError("The event is too large.")
    try:
        return ctx.provider.parse_event(payload)
    except InvalidProviderPayload:
        raise ValidationError("The event is not a prediction.") from None


async def submission_traceparent(ctx: GenerationContext, prediction_id: str) -> str | None:
    """The trace context stored with the job that started ``prediction_id``, if any."""
    async with ctx.reads() as stores:
        job = await stores.jobs.get_by_prediction_id(prediction_id)
    return job.traceparent if job else None


async def apply_prediction(
    ctx: GenerationContext,
    prediction: Prediction,
    source: str,
    named_job: uuid.UUID | None = None,
) -> tuple[Outcome, Job | None]:
    """Move the job of ``prediction`` forward to the provider's state.

    ``named_job``: the job the webhook's URL names. A webhook's prediction that no job
    has is adopted by the job it names, or canceled as nobody's (domain/run_claims.py).
    Returns the outcome and the job with the status it has now (the rest of the
    snapshot as read before the change).
    """
    async with ctx.reads() as stores:
        job = await stores.jobs.get_by_prediction_id(prediction.id)
    if job is None:
        job = await claim_run(ctx, prediction, named_job)
    if job is None:
        log.info("provider.unknown_prediction", predictionId=prediction.id, source=source)
        return Outcome.UNKNOWN_PREDICTION, None
    target = jobs.job_status_for(prediction.status)
    if not jobs.moves_forward(job.status, target):
        log.info("job.event_stale", **jobs.log_fields(job), source=source, eventStatus=target)
        return Outcome.STALE, job
    # The status this applier set, or None when another write got there first.
    if target == jobs.PROCESSING:
        changed = await _mark_processing(ctx, job, prediction)
        status = target if changed else None
    elif target == jobs.SUCCEEDED:
        status = await _to_its_end(ctx, job, prediction)
    else:
        changed = await end_without_output(ctx, job, _error_for(prediction), target)
        status = target if changed else None
    if status is not None:
        log.info("job.transition", **jobs.log_fields(job, status), source=source)
        metrics.job_transition(status, source)
        # This applier set the status itself: the caller (the webhook's answer) needs
        # no read of the job to tell it. Only a write that lost a race reads what won.
        return Outcome.APPLIED, dataclasses.replace(job, status=status)
    async with ctx.reads() as stores:
        current = await stores.jobs.get(job.id)
    return Outcome.STALE, current


def _error_for(prediction: Prediction) -> jobs.JobError:
    if prediction.status is ProviderStatus.ABORTED:
        return jobs.ABORTED
    if prediction.status is ProviderStatus.CANCELED:
        return jobs.PROVIDER_CANCELED
    return jobs.PROVIDER_FAILED


async def _mark_processing(ctx: GenerationContext, job: Job, prediction: Prediction) -> bool:
    now = ctx.clock.now()
    async with ctx.transactions() as tx:
        return await tx.jobs.mark_processing(job.id, prediction.started_at or now, now)


async def end_without_output(
    ctx: GenerationContext,
    job: jobs.JobRef,
    error: jobs.JobError,
    status: str,
    *,
    unless_attached: bool = False,
) -> bool:
    """End the job failed/canceled and give its generation back (exactly once);
    ``unless_attached``: only while it has no run (one may be adopted meanwhile)."""
    ended = await end_job(ctx, job, error, status, unless_attached=unless_attached)
    if ended.to_refund is not None:
        await refund(ctx, ended.to_refund)
    return ended.changed


@dataclasses.dataclass(frozen=True)
class Ended:
    """What :func:`end_job` did: whether this write ended the job, the job as it is now
    (read in the same transaction; None only if its row is gone), and whether its
    refund is now due."""

    changed: bool
    job: Job | None
    refund_due: bool

    @property
    def to_refund(self) -> Job | None:
        """The job whose refund is due (the caller's to request), else None."""
        return self.job if self.refund_due else None


async def end_job(
    ctx: GenerationContext,
    job: jobs.JobRef,
    error: jobs.JobError,
    status: str,
    *,
    unless_attached: bool = False,
) -> Ended:
    """:func:`end_without_output` without its refund."""
    async with ctx.transactions() as tx:
        update = await tx.jobs.mark_ended_without_output(
            job.id,
            status,
            error.code,
            error.message,
            ctx.clock.now(),
            unless_attached=unless_attached,
            # The provider's ``canceled`` may come from the owner's own cancel, which
            # asked the provider before ending the job itself.
            message_if_owner_asked=(
                jobs.USER_CANCELED.message if error is jobs.PROVIDER_CANCELED else None
            ),
        )
        current = await tx.jobs.get(job.id)
    return Ended(update.changed, current, update.refund_due)


async def _to_its_end(ctx: GenerationContext, job: Job, prediction: Prediction) -> str | None:
    """:func:`_finish_with_output`, which a cancelled caller (its RPC's deadline, the
    gateway gone) still waits for before the cancellation goes on.

    The storage client writes in threads that a cancellation does not stop, and only
    the copy's own end makes its files safe: the commit of the render, or, for a job
    ended meanwhile (deleted, canceled, timed out), the claim that has them removed.
    Cut short in between, a file could land after a DELETE emptied the render's prefix
    and be served again for good.
    """
    task = asyncio.ensure_future(_finish_with_output(ctx, job, prediction))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.shield(task)
        except (ProviderError, StorageError):
            pass  # logged as job.assets_deferred; the job stays for a retry or the sweep
        except Exception as error:
            # Its caller is gone: nobody else would hear of it.
            log.warning(
                "job.finish_after_cancel_failed", **jobs.log_fields(job), error=type(error).__name__
            )
        raise


async def _finish_with_output(
    ctx: GenerationContext, job: Job, prediction: Prediction
) -> str | None:
    """The status set: succeeded with the outputs stored, or failed without them."""
    if not prediction.output_urls:
        return await _fail(ctx, job, jobs.NO_OUTPUT)
    render_id = jobs.render_id_for(job.id)
    try:
        variants = await store_render_variants(ctx, render_id, prediction.output_urls)
    except OutputRefused:
        # Permanent: no retry or refresh makes a foreign host a delivery host. The
        # provider logged the host; the job ends failed and is refunded once.
        log.warning("job.output_refused", **jobs.log_fields(job))
        metrics.asset("refused")
        failed = await _fail(ctx, job, jobs.OUTPUT_REFUSED)
        if failed is None:
            await _remove_if_ended(ctx, job)
        return failed
    except (ProviderError, StorageError) as error:
        # Left in flight: a retried webhook, a refresh or the sweep will try again
        # (the overall timeout ends it if the output never becomes reachable).
        log.warning("job.assets_deferred", **jobs.log_fields(job), error=type(error).__name__)
        metrics.asset("deferred")
        await _remove_if_ended(ctx, job)
        raise
    now = ctx.clock.now()
    completed_at = prediction.completed_at or now
    async with ctx.statements() as stores:
        # One statement (see JobStore.mark_succeeded): the conditional update locks the
        # row and checks the job is still in flight; the render rows commit with it or
        # not at all. On an autocommit connection: no BEGIN/COMMIT round trips.
        succeeded = await stores.jobs.mark_succeeded(job.id, render_id, variants, completed_at, now)
    stray = None
    if not succeeded:
        # Someone ended the job while we copied: our files must not outlive a
        # deleted render or belong to a job that ended failed/canceled.
        async with ctx.transactions() as tx:
            stray = await tx.removals.claim_stray_files(job.id, now)
    if stray is not None:
        await _remove_stray_files(ctx, job, stray)
    return jobs.SUCCEEDED if succeeded else None


async def _remove_if_ended(ctx: GenerationContext, job: Job) -> None:
    """After a copy that stored only some files (every copy runs to its end before the
    first failure is raised): if the job ended meanwhile, a DELETE or the end's own
    removal may have emptied its prefix before these files arrived, so they are made
    due again. A job still in flight keeps them: its next applier overwrites them, and
    an end without output makes the prefix due after they were written."""
    async with ctx.transactions() as tx:
        current = await tx.jobs.get(job.id)
        stray = None
        if current is not None and current.status not in INFLIGHT:
            stray = await tx.removals.claim_stray_files(job.id, ctx.clock.now())
    if stray is not None:
        await _remove_stray_files(ctx, job, stray)


async def _fail(ctx: GenerationContext, job: Job, error: jobs.JobError) -> str | None:
    return jobs.FAILED if await end_without_output(ctx, job, error, jobs.FAILED) else None


async def _remove_stray_files(ctx: GenerationContext, job: Job, stray: PendingFiles) -> None:
    """Remove what this applier wrote for a job that ended without it (best effort)."""
    try:
        await remove_render_files(ctx, stray)
    except StorageError as error:
        # Recorded as due already: the sweep removes them.
        log.warning(
            "job.stray_outputs_deferred",
            **jobs.log_fields(job),
            error=type(error).__name__,
        )
        return
    log.info("job.stray_outputs_removed", **jobs.log_fields(job))
