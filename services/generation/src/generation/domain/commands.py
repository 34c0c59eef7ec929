"""What an owner does to one of their jobs: cancel it, delete it."""

from __future__ import annotations

import dataclasses
import uuid

from generation import metrics
from generation.domain import jobs
from generation.domain.cleanup import remove_deleted_job_files
from generation.domain.context import GenerationContext
from generation.domain.events import apply_prediction, end_without_output
from generation.domain.provider import ProviderError
from generation.domain.queries import load_view
from generation.domain.run_claims import cancel_quietly
from generation.domain.settlement import refund
from generation.domain.states import RefundState
from kit.errors import JobNotCancellable, JobNotFinished
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.commands")


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
        # Recorded first: the provider's ``canceled`` webhook may end the job before
        # this cancel does, and must then say that its owner canceled it.
        async with ctx.statements() as stores:
            await stores.jobs.request_cancel(job.id, ctx.clock.now())
        await _cancel_at_provider(ctx, job, job.prediction_id, before_the_end=True)
    ended = await end_without_output(ctx, job, jobs.USER_CANCELED, jobs.CANCELED)
    view = await load_view(ctx, owner_id, job_id)
    if view.status != jobs.CANCELED:
        raise JobNotCancellable()
    if job.prediction_id is None and view.prediction_id is not None:
        # The submission attached its prediction between our read and the end: it saw
        # the job still starting, so nobody else stops the provider's run.
        await _cancel_at_provider(ctx, view, view.prediction_id, before_the_end=False)
    if ended:
        # Only the write that ended the job tells it: a second click, or the provider's
        # ``canceled`` webhook that got there first, already did (and was counted).
        log.info("job.canceled", **jobs.log_fields(view))
        metrics.job_transition(jobs.CANCELED, "user")
    else:
        await _refund_if_pending(ctx, job_id)
    return view


async def _refund_if_pending(ctx: GenerationContext, job_id: uuid.UUID) -> None:
    """The provider's ``canceled`` webhook (or a second click) ended the job first and
    its refund may still be on its way: the answer waits for it, so a ``GET /usage``
    right after the cancel shows the generation back. Asking the usage service again is
    a replay there; only one of the two records the refund."""
    async with ctx.reads() as stores:
        current = await stores.jobs.get(job_id)
    if current is not None and current.refund_state == RefundState.PENDING:
        await refund(ctx, current)


async def _cancel_at_provider(
    ctx: GenerationContext, job: jobs.JobView, prediction_id: str, *, before_the_end: bool
) -> None:
    """Stop the provider's run; a result that won the race is applied first.

    ``before_the_end``: the job is still in flight. When the run had already succeeded
    but its result cannot be stored now (a storage or download failure), the job is not
    ended canceled (and refunded) over it: JobNotCancellable, and the job stays in flight
    for the webhook's retries, a GET's refresh or the sweep to store the result.
    """
    prediction = await cancel_quietly(ctx, prediction_id, job)
    # Not cancelled there: the user's intent wins; the job ends here and a late provider
    # event is ignored.
    if prediction is None or jobs.job_status_for(prediction.status) != jobs.SUCCEEDED:
        return
    try:
        await apply_prediction(ctx, prediction, source="cancel")
    except (ProviderError, StorageError) as error:
        if not before_the_end:
            return  # ended canceled already (by this cancel): nothing to keep in flight
        log.warning("job.cancel_found_a_result", **jobs.log_fields(job), error=type(error).__name__)
        raise JobNotCancellable() from None


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
    async with ctx.transactions() as tx:
        await tx.removals.mark_deleted(view.id, now)
        deleted = await tx.renders.soft_delete(view.id, now)
        # Read in the same transaction: the render's deletion gave the job a new
        # version, which the answer must carry (an edge keeps it as the floor no older
        # view may cross; the version read before would equal the view with variants).
        after = await tx.reads.view(owner_id, view.id)
    log.info("render.deleted", **jobs.log_fields(view), changed=deleted)
    await remove_deleted_job_files(ctx, view.id)
    return after or dataclasses.replace(view, render_id=None, variants=(), input_keys=())
