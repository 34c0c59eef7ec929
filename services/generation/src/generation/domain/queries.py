"""Reading, refreshing, canceling and deleting one owner's jobs."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from datetime import timedelta

from generation import metrics
from generation.domain import jobs
from generation.domain.cleanup import remove_deleted_job_files
from generation.domain.context import GenerationContext
from generation.domain.events import apply_prediction, end_without_output
from generation.domain.provider import Prediction, PredictionNotFound, ProviderError
from generation.persistence.removals import RemovalRepository
from generation.persistence.repositories import JobRepository, RenderRepository, load_job_view
from kit.db import session_scope
from kit.errors import JobNotCancellable, JobNotFinished, NotFound
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.queries")


async def load_view(ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID) -> jobs.JobView:
    """The owner's job with its visible variants; NotFound for anyone else's."""
    async with ctx.readers() as session:
        view = await load_job_view(session, owner_id, job_id)
    if view is None:
        raise NotFound("Generation not found.")
    return view


async def get_generation(
    ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID
) -> jobs.JobView:
    """The job; a stale in-flight one is refreshed from the provider first."""
    view = await load_view(ctx, owner_id, job_id)
    if await refresh_if_stale(ctx, view):
        view = await load_view(ctx, owner_id, job_id)
    return view


async def refresh_if_stale(ctx: GenerationContext, view: jobs.JobView) -> bool:
    """Poll the provider once when the job's state is older than the stale threshold.

    The throttle is a conditional update in the database, so at most one poll per
    prediction per window happens across every instance. Provider or storage
    trouble is logged and the current state returned: a GET never fails for it.
    """
    timings = ctx.config.timings
    now = ctx.clock.now()
    if jobs.is_terminal(view.status) or view.prediction_id is None:
        return False
    if now - view.updated_at < timedelta(milliseconds=timings.stale_after_ms):
        return False
    async with session_scope(ctx.sessions) as session:
        claimed = await JobRepository(session).claim_poll(
            view.id, now, timedelta(milliseconds=timings.poll_throttle_ms)
        )
    if not claimed:
        return False
    return await poll_and_apply(ctx, view, source="refresh")


async def poll_and_apply(ctx: GenerationContext, job: jobs.JobRef, source: str) -> bool:
    """Fetch the prediction and apply it; True when the job changed."""
    assert job.prediction_id is not None
    fields = {k: v for k, v in jobs.log_fields(job).items() if k != "status"}
    try:
        prediction = await ctx.provider.get_prediction(job.prediction_id)
    except PredictionNotFound:
        log.warning("job.prediction_missing", **fields, status=jobs.FAILED, source=source)
        ended = await end_without_output(ctx, job, jobs.PROVIDER_FAILED, jobs.FAILED)
        if ended:
            metrics.job_transition(jobs.FAILED, source)
        return ended
    except ProviderError as error:
        log.warning(
            "job.poll_failed",
            **fields,
            status=job.status,
            source=source,
            error=type(error).__name__,
        )
        return False
    try:
        outcome, _ = await apply_prediction(ctx, prediction, source=source)
    except (ProviderError, StorageError):
        return False
    log.info(
        "job.polled", **fields, status=prediction.status.value, source=source, outcome=outcome.value
    )
    return outcome.value == "applied"


async def cancel_generation(
    ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID
) -> jobs.JobView:
    """Cancel a starting/processing job at the provider, end it canceled, refund it."""
    job = await load_view(ctx, owner_id, job_id)
    if jobs.is_terminal(job.status):
        if job.status == jobs.CANCELED:
            return job  # canceling twice is harmless
        raise JobNotCancellable()
    if job.prediction_id is not None:
        try:
            prediction = await ctx.provider.cancel_prediction(job.prediction_id)
        except ProviderError as error:
            # The user's intent wins: end the job here; a late provider event is ignored.
            log.warning(
                "provider.cancel_failed",
                ownerId=str(owner_id),
                jobId=str(job.id),
                predictionId=job.prediction_id,
                error=type(error).__name__,
            )
        else:
            if jobs.job_status_for(prediction.status) == jobs.SUCCEEDED:
                await _apply_quietly(ctx, prediction)
    await end_without_output(ctx, job, jobs.USER_CANCELED, jobs.CANCELED)
    view = await load_view(ctx, owner_id, job_id)
    if view.status != jobs.CANCELED:
        raise JobNotCancellable()
    log.info(
        "job.canceled",
        ownerId=str(owner_id),
        jobId=str(job.id),
        predictionId=job.prediction_id,
        status=jobs.CANCELED,
    )
    metrics.job_transition(jobs.CANCELED, "user")
    return view


async def _apply_quietly(ctx: GenerationContext, prediction: Prediction) -> None:
    with contextlib.suppress(ProviderError, StorageError):
        await apply_prediction(ctx, prediction, source="cancel")


async def delete_generation(
    ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID
) -> jobs.JobView:
    """Soft-delete a finished job's render and remove its files and inputs from storage.

    The deletion commits first and records what is left to remove; the removal is
    then tried once here, and a storage failure does not fail the DELETE: the
    sweep retries it until done. Deleting again is harmless (and retries too).
    """
    view = await load_view(ctx, owner_id, job_id)
    if not jobs.is_terminal(view.status):
        raise JobNotFinished()
    now = ctx.clock.now()
    async with session_scope(ctx.sessions) as session:
        await RemovalRepository(session).mark_deleted(view.id, now)
        deleted = await RenderRepository(session).soft_delete(view.id, now)
    log.info(
        "render.deleted",
        ownerId=str(owner_id),
        jobId=str(job_id),
        predictionId=view.prediction_id,
        status=view.status,
        changed=deleted,
    )
    await remove_deleted_job_files(ctx, view.id)
    return dataclasses.replace(view, render_id=None, variants=())
