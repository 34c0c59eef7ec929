"""Starting a recorded job at the provider, then charging it.

The provider is asked with signed input URLs and the absolute webhook URL; its
prediction id is attached, then the usage debit (idempotent per job) follows.

Unwinding: a provider failure ends the job ``failed`` (nothing was charged yet,
the slot is freed, the inputs stay referenced by the failed job) and answers
UPSTREAM_ERROR; a job canceled while being submitted is canceled at the provider
and never charged; a debit refused (the plan changed meanwhile) cancels the
prediction and fails the job with LIMIT_EXCEEDED; a debit that cannot reach the
usage service is finished later by the sweep.

A create whose answer was lost (a timeout after the request reached the provider)
started a run all the same. When that run's webhook named it first (its URL names
the job: domain/run_claims.py), the job has it attached, and the submission goes on
as if the answer had come: the user gets the render the run makes, and pays once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import uuid
from dataclasses import dataclass

from generation import metrics
from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.events import end_job
from generation.domain.provider import PredictionRequest, ProviderError
from generation.domain.records import Job
from generation.domain.run_claims import cancel_quietly, webhook_url_for
from generation.domain.settlement import charge, waive_charge
from generation.domain.states import ENDED_WITHOUT_OUTPUT
from kit.errors import LimitExceeded, UpstreamError
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.submission")


@dataclass(frozen=True)
class StartedJob:
    """The job being submitted, as the settlement and the logs need it."""

    id: uuid.UUID
    owner_id: uuid.UUID
    prediction_id: str | None = None
    status: str = jobs.STARTING


@dataclass(frozen=True)
class _Ending:
    """What failing the job here did: whether this write ended it (only then is the
    transition logged and counted), and the job's log fields as it is now."""

    changed: bool
    fields: dict[str, str | None]
    # The run attached to the job meanwhile by that run's own webhook, when the
    # write was refused for it (``unless_attached``).
    adopted: str | None = None


def provider_deadline_seconds(ctx: GenerationContext) -> int:
    """How long after its create the provider stops a run on its own: the job's overall
    timeout plus two sweeps and a minute. The sweep ends an overdue job first (failed,
    TIMED_OUT, refunded, its run canceled); this deadline stops the runs we cannot: one
    whose create's answer was lost and that never told us its id, an orphan whose
    cancel failed, any run while no sweep is running."""
    timings = ctx.config.timings
    margin_ms = 2 * timings.sweep_interval_ms + 60_000
    return math.ceil((timings.overall_timeout_ms + margin_ms) / 1000)


async def start_prediction(
    ctx: GenerationContext, job: StartedJob, prompt: str, input_keys: list[str], webhook_url: str
) -> Job | None:
    """Create the prediction, attach it and charge the job (see the module docstring).

    Answers the job as last written here, or None when it was canceled meanwhile.
    """
    # The provider fetches the inputs when the run starts, which a queue can delay up to
    # the run's own deadline: the links live as long, not only a user's few minutes.
    ttl = max(ctx.config.uploads.signed_url_ttl_seconds, provider_deadline_seconds(ctx))
    try:
        # Signed locally (an HMAC): no thread hop, as the answer's own links are signed.
        urls = [ctx.storage.sign_get_url(ctx.private_bucket, key, ttl) for key in input_keys]
        prediction = await ctx.provider.create_prediction(
            PredictionRequest(
                prompt=prompt,
                image_urls=tuple(urls),
                webhook_url=webhook_url_for(webhook_url, job.id),
                webhook_events=ctx.config.replicate.webhook_events,
                output_format=ctx.config.replicate.output_format,
                cancel_after_seconds=provider_deadline_seconds(ctx),
            )
        )
    except (ProviderError, StorageError) as error:
        # A job the user canceled meanwhile stays canceled: logged as it is, not counted.
        ending = await _fail_unsubmitted(ctx, job, jobs.UPSTREAM, unless_attached=True)
        if ending.adopted is not None:
            # The answer was lost, but the run it started told us its id itself.
            log.warning("job.create_answer_lost", **ending.fields, error=type(error).__name__)
            return await _attach_and_charge(ctx, job, ending.adopted)
        log.error("job.provider_create_failed", **ending.fields, error=type(error).__name__)
        if ending.changed:
            metrics.job_transition(jobs.FAILED, "submit")
        raise UpstreamError() from error
    except BaseException:
        # Cancelled or crashed mid-call: never leave the in-flight slot held. A run
        # its webhook attached meanwhile is followed and charged as any (the sweep).
        await asyncio.shield(_end_interrupted(ctx, job, unless_attached=True))
        raise
    return await _attach_and_charge(ctx, job, prediction.id)


async def fail_interrupted(ctx: GenerationContext, job_id: uuid.UUID, owner_id: uuid.UUID) -> None:
    """End a job whose submission was cancelled before the provider was asked."""
    await _end_interrupted(ctx, StartedJob(job_id, owner_id))


async def _end_interrupted(
    ctx: GenerationContext, job: StartedJob, *, unless_attached: bool = False
) -> None:
    """Fail an interrupted submission's job; logged and counted when this write ended it."""
    ending = await _fail_unsubmitted(ctx, job, jobs.INTERRUPTED, unless_attached=unless_attached)
    if ending.changed:
        log.warning("job.submit_interrupted", **ending.fields)
        metrics.job_transition(jobs.FAILED, "submit")


async def _fail_unsubmitted(
    ctx: GenerationContext, job: StartedJob, error: jobs.JobError, *, unless_attached: bool = False
) -> _Ending:
    """End the job failed unless it already ended (or, ``unless_attached``, has a run);
    the row is read back in the same transaction, so the log says what the job is now
    (canceled, when the user won). A refund this end makes due is recorded with it and
    left to the sweep."""
    ended = await end_job(ctx, job, error, jobs.FAILED, unless_attached=unless_attached)
    current = ended.job
    if current is None:  # never: jobs are not removed; the write's own answer then
        status = jobs.FAILED if ended.changed else job.status
        current_ref: jobs.JobRef = dataclasses.replace(job, status=status)
    else:
        current_ref = current
    fields = jobs.log_fields(current_ref)
    # The provider's run this submission asked for is named even when its id could
    # not be attached (the attach failed): it is the run that was canceled.
    fields["predictionId"] = fields["predictionId"] or job.prediction_id
    adopted = None
    if unless_attached and not ended.changed and current is not None:
        adopted = current.prediction_id
    return _Ending(ended.changed, fields, adopted)


async def _attach_and_charge(
    ctx: GenerationContext, job: StartedJob, prediction_id: str
) -> Job | None:
    attach = asyncio.ensure_future(_attach(ctx, job, prediction_id))
    try:
        attached = await asyncio.shield(attach)
    except asyncio.CancelledError:
        # The caller is gone (its client left, its deadline passed) while the run it
        # started was being attached: the run must still be followed or stopped.
        await asyncio.shield(_after_interrupted_attach(ctx, job, prediction_id, attach))
        raise
    except Exception:
        # The database failed right after the provider accepted: do not leave a run
        # nobody will follow. Failing the job may fail too; the sweep then ends it.
        await asyncio.shield(_abandon_prediction(ctx, job, prediction_id))
        raise
    if attached is None:
        await _stop_unattached(ctx, job, prediction_id)
        return None
    prediction_id = attached.prediction_id or prediction_id
    log.info(
        "job.provider_accepted",
        **jobs.job_fields(job.owner_id, job.id, prediction_id, attached.status),
    )
    if attached.status in ENDED_WITHOUT_OUTPUT:
        # Its run's webhook named it first, then it ended before this answer (its user
        # canceled, the run failed): never charged, as a job canceled before its run was
        # attached. The sweep settles it (a credit that finds no debit: waived).
        return attached
    submitted = StartedJob(job.id, job.owner_id, prediction_id)
    try:
        charged = await charge(ctx, submitted)
    except LimitExceeded:
        # Ended first, then canceled: the provider's "canceled" webhook must not reach
        # the job before it has ended failed (as the sweep's time-out does).
        ending = await _fail_unsubmitted(ctx, submitted, jobs.OVER_LIMIT)
        if ending.fields["status"] == jobs.SUCCEEDED:
            # Adopted after its create's answer was lost, its run made the render before
            # the debit was refused: the render stands, never charged past the plan.
            succeeded = dataclasses.replace(attached, status=jobs.SUCCEEDED)
            await waive_charge(ctx, succeeded)
            return succeeded
        await cancel_quietly(ctx, prediction_id, dataclasses.replace(submitted, status=jobs.FAILED))
        log.warning("job.debit_refused", **ending.fields)
        if ending.changed:
            metrics.job_transition(jobs.FAILED, "submit")
        raise
    return charged or attached


async def _attach(ctx: GenerationContext, job: StartedJob, prediction_id: str) -> Job | None:
    """The job with its run attached, or None when it left ``starting`` without one.

    A run's webhook may have named it first (domain/run_claims.py): the job is then
    answered as attached. When that is another run than this create's (a create that
    answered 5xx had started one, and its retry started this), this one is nobody's
    and is stopped.
    """
    async with ctx.statements() as stores:
        attached = await stores.jobs.attach_prediction(job.id, prediction_id, ctx.clock.now())
        current = attached or await stores.jobs.get(job.id)
    if current is None or current.prediction_id is None:
        return None
    if current.prediction_id != prediction_id:
        await cancel_quietly(ctx, prediction_id, current)
        log.warning(
            "provider.duplicate_run_canceled",
            **jobs.log_fields(current),
            duplicatePredictionId=prediction_id,
        )
    return current


async def _after_interrupted_attach(
    ctx: GenerationContext, job: StartedJob, prediction_id: str, attach: asyncio.Future[Job | None]
) -> None:
    """Once the attach ends: a run attached is followed as any other (its webhooks, the
    sweep, which also charges it); one that could not be attached is stopped (its job
    failed, or canceled by its user meanwhile), as an uninterrupted submission does."""
    try:
        attached = await attach
    except Exception:
        await _abandon_prediction(ctx, job, prediction_id)
        return
    if attached is None:
        await _stop_unattached(ctx, job, prediction_id)


async def _stop_unattached(ctx: GenerationContext, job: StartedJob, prediction_id: str) -> None:
    """The job was canceled (or ended) while we were submitting: stop the provider's run
    too, and say so with the job's status as it is now."""
    await cancel_quietly(
        ctx, prediction_id, StartedJob(job.id, job.owner_id, prediction_id, jobs.CANCELED)
    )
    status: str = jobs.CANCELED  # what ends a job in this window, nearly always
    with contextlib.suppress(Exception):  # a log line's detail: never fails the call
        async with ctx.reads() as tx:
            current = await tx.jobs.get(job.id)
        status = current.status if current is not None else status
    log.info(
        "job.canceled_during_submit", **jobs.job_fields(job.owner_id, job.id, prediction_id, status)
    )


async def _abandon_prediction(ctx: GenerationContext, job: StartedJob, prediction_id: str) -> None:
    await cancel_quietly(ctx, prediction_id, StartedJob(job.id, job.owner_id, prediction_id))
    try:
        await _end_interrupted(ctx, StartedJob(job.id, job.owner_id, prediction_id))
    except Exception:
        log.warning(
            "job.fail_deferred",
            **jobs.job_fields(job.owner_id, job.id, prediction_id, jobs.STARTING),
        )
