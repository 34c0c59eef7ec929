"""Asking the provider for a job's state when its webhooks have gone quiet.

GETs of a stale job and the sweep both come here; the per-prediction throttle
is a conditional update in the database, so it holds across every instance.
"""

from __future__ import annotations

from datetime import timedelta

from generation import metrics
from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.events import Outcome, apply_prediction, end_without_output
from generation.domain.provider import PredictionNotFound, ProviderError
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.refresh")


async def refresh_if_stale(ctx: GenerationContext, view: jobs.JobView) -> bool:
    """Poll the provider once when the job's state is older than the stale threshold.

    At most one poll per prediction per window happens across every instance.
    Provider or storage trouble is logged and the current state returned: a GET
    never fails for it.
    """
    timings = ctx.config.timings
    now = ctx.clock.now()
    if jobs.is_terminal(view.status) or view.prediction_id is None:
        return False
    if now - view.updated_at < timedelta(milliseconds=timings.stale_after_ms):
        return False
    async with ctx.transactions() as tx:
        claimed = await tx.jobs.claim_poll(
            view.id, now, timedelta(milliseconds=timings.poll_throttle_ms)
        )
    if not claimed:
        return False
    return await poll_and_apply(ctx, view, view.prediction_id, source="refresh")


async def poll_and_apply(
    ctx: GenerationContext, job: jobs.JobRef, prediction_id: str, source: str
) -> bool:
    """Fetch the job's prediction and apply it; True when the job changed."""
    try:
        prediction = await ctx.provider.get_prediction(prediction_id)
    except PredictionNotFound:
        ended = await end_without_output(ctx, job, jobs.PROVIDER_FAILED, jobs.FAILED)
        # Failed by this write, or left as it was (another path ended it first).
        status = jobs.FAILED if ended else job.status
        log.warning("job.prediction_missing", **jobs.log_fields(job, status), source=source)
        if ended:
            metrics.job_transition(jobs.FAILED, source)
        return ended
    except ProviderError as error:
        log.warning(
            "job.poll_failed",
            **jobs.log_fields(job),
            source=source,
            error=type(error).__name__,
        )
        return False
    try:
        outcome, current = await apply_prediction(ctx, prediction, source=source)
    except (ProviderError, StorageError):
        return False  # logged where it failed (job.assets_deferred); a later poll retries
    log.info(
        "job.polled",
        # The job's status as it is now (``status`` is always the job's, in every line);
        # the provider's is beside it.
        **jobs.log_fields(job, current.status if current is not None else None),
        providerStatus=prediction.status.value,
        source=source,
        outcome=outcome.value,
    )
    return outcome is Outcome.APPLIED
