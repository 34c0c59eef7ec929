"""Removing what a job must not keep in storage: render files and deleted inputs.

The job row says what is still to remove (``files_due_at`` without
``files_removed_at``; ``deleted_at`` without ``inputs_removed_at``), so the work
survives a crash or a storage outage: a DELETE tries at once, after its commit,
and the sweep retries every pass until it is done. Every step is repeat-safe
(removing a missing object is not an error, the marks are conditional updates),
so any number of instances may run it at the same time.

Render files are removed by listing ``renders/<renderId>/``, not by known
names, so files the database does not name (a thumbnail, a late applier's copy)
go too. A writer that stores files for a job that has already ended without a
live render bumps ``files_round`` before removing them itself; a removal that
read an earlier round may have listed before those files existed, so it cannot
record the files as removed, and the sweep lists again. A writer that dies
between its write and that claim is caught by time instead: a removal within
``LATE_WRITERS`` of the job's last change is not recorded, and the prefix is
listed once more when that time is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import timedelta

from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.jobs import render_id_for
from generation.domain.records import Job, PendingFiles
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.cleanup")

# Per sweep pass; a removal costs a listing, a batch delete and one UPDATE, so a
# pass clears this many well within the sweep interval.
_BATCH = 200
# Storage refusing this many removals in a row is taken to be down for this pass.
_FAILURES_IN_A_ROW = 3
# The DELETE waits this long at most for its own attempt: a storage that hangs
# (rather than refusing) must not push the answer past the caller's deadline,
# since the deletion is committed and the sweep finishes the removal anyway.
AT_ONCE_SECONDS = 3.0
# How long after a job last changed an applier that read it in flight may still write
# its copy (each output's download has 120 s; PUTs and the thumbnail add seconds): a
# render prefix emptied within that is listed once more at its end, for the files of a
# late writer that died before claiming them (persistence.removals.mark_files_removed).
LATE_WRITERS = timedelta(minutes=10)


def render_prefix(render_id: uuid.UUID) -> str:
    """Every file of a render lives under this prefix of the public bucket."""
    return f"renders/{render_id}/"


async def remove_render_files(ctx: GenerationContext, pending: PendingFiles) -> bool:
    """Remove everything under the job's render prefix and record it (raises StorageError,
    after sending the job behind the others due: see ``_remove_all``).

    False when the removal could not be recorded because a late writer stored
    files after ``pending`` was read: the sweep lists the prefix again.
    """
    prefix = render_prefix(render_id_for(pending.job_id))
    try:
        await ctx.storage.remove_prefix(ctx.public_bucket, prefix)
    except StorageError:
        await _postpone(ctx, pending.job_id)
        raise
    async with ctx.transactions() as tx:
        marked = await tx.removals.mark_files_removed(pending, ctx.clock.now(), LATE_WRITERS)
    log.info(
        "render.files_removed",
        ownerId=str(pending.owner_id),
        jobId=str(pending.job_id),
        recorded=marked,
    )
    return marked


async def remove_job_inputs(ctx: GenerationContext, job: Job) -> bool:
    """Remove a deleted job's inputs that no other undeleted job of its owner names.

    Raises StorageError; the inputs then stay due for removal.
    """
    async with ctx.reads() as stores:
        in_use = await stores.removals.keys_in_use(job.owner_id, job.id, job.input_keys)
    unshared = [key for key in job.input_keys if key not in in_use]
    if unshared:
        try:
            await ctx.storage.remove(ctx.private_bucket, unshared)
        except StorageError:
            await _postpone(ctx, job.id)
            raise
    async with ctx.transactions() as tx:
        await tx.removals.mark_inputs_removed(job.id, ctx.clock.now())
    log.info("job.inputs_removed", **jobs.log_fields(job), removed=len(unshared), kept=len(in_use))
    return True


async def _postpone(ctx: GenerationContext, job_id: uuid.UUID) -> None:
    """Send the job behind the others due (see ``_remove_all``)."""
    with contextlib.suppress(Exception):  # only the order of the retries is at stake
        async with ctx.statements() as stores:
            await stores.removals.postpone_removal(job_id, ctx.clock.now())


async def remove_deleted_job_files(ctx: GenerationContext, job_id: uuid.UUID) -> None:
    """Right after a DELETE commits: one bounded attempt; the rest is left to the sweep."""
    async with ctx.reads() as stores:
        files = await stores.removals.files_pending_removal(job_id, 1, ctx.clock.now())
        inputs = await stores.removals.inputs_pending_removal([job_id], 1)
    try:
        async with asyncio.timeout(AT_ONCE_SECONDS):
            await _remove_all(ctx, files, inputs)
    except TimeoutError:
        log.warning("storage.removal_deferred", jobId=str(job_id), error="TimeoutError")


async def sweep_deleted_files(ctx: GenerationContext) -> int:
    """One sweep step: retry every pending removal (a batch); returns how many finished."""
    async with ctx.reads() as stores:
        files = await stores.removals.files_pending_removal(None, _BATCH, ctx.clock.now())
        inputs = await stores.removals.inputs_pending_removal(None, _BATCH)
    return await _remove_all(ctx, files, inputs)


async def _remove_all(
    ctx: GenerationContext, files: Sequence[PendingFiles], inputs: Sequence[Job]
) -> int:
    """Each removal on its own: one that storage refuses (for a while or for good: an
    object under retention, a policy) is passed over and its job sent to the back of
    both queues, so it never keeps the others' files or inputs from going."""
    done = 0
    for removals in (
        ((pending.job_id, remove_render_files(ctx, pending)) for pending in files),
        ((job.id, remove_job_inputs(ctx, job)) for job in inputs),
    ):
        failures = 0
        for job_id, removal in removals:
            try:
                done += int(await removal)
            except StorageError as error:
                log.warning(
                    "storage.removal_deferred", jobId=str(job_id), error=type(error).__name__
                )
                failures += 1
                if failures == _FAILURES_IN_A_ROW:
                    break  # storage is down: no timeout per item; the next pass retries
            else:
                failures = 0
    return done
