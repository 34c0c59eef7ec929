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
record the files as removed, and the sweep lists again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Sequence

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
        with contextlib.suppress(Exception):  # only the order of the retries is at stake
            async with ctx.statements() as stores:
                await stores.removals.postpone_files(pending.job_id, ctx.clock.now())
        raise
    async with ctx.transactions() as tx:
        marked = await tx.removals.mark_files_removed(pending, ctx.clock.now())
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
        await ctx.storage.remove(ctx.private_bucket, unshared)
    async with ctx.transactions() as tx:
        await tx.removals.mark_inputs_removed(job.id, ctx.clock.now())
    log.info("job.inputs_removed", **jobs.log_fields(job), removed=len(unshared), kept=len(in_use))
    return True


async def remove_deleted_job_files(ctx: GenerationContext, job_id: uuid.UUID) -> None:
    """Right after a DELETE commits: one bounded attempt; the rest is left to the sweep."""
    async with ctx.reads() as stores:
        files = await stores.removals.files_pending_removal(job_id, 1)
        inputs = await stores.removals.inputs_pending_removal([job_id], 1)
    try:
        async with asyncio.timeout(AT_ONCE_SECONDS):
            await _remove_all(ctx, files, inputs)
    except TimeoutError:
        log.warning("storage.removal_deferred", jobId=str(job_id), error="TimeoutError")


async def sweep_deleted_files(ctx: GenerationContext) -> int:
    """One sweep step: retry every pending removal (a batch); returns how many finished."""
    async with ctx.reads() as stores:
        files = await stores.removals.files_pending_removal(None, _BATCH)
        inputs = await stores.removals.inputs_pending_removal(None, _BATCH)
    return await _remove_all(ctx, files, inputs)


async def _remove_all(
    ctx: GenerationContext, files: Sequence[PendingFiles], inputs: Sequence[Job]
) -> int:
    """Each removal on its own: one that storage refuses (for a while or for good: an
    object under retention, a policy) is passed over, and a job's render files it
    refused go to the back of the queue, so it never keeps the others' from going."""
    done = failures = 0

    async def attempt(job_id: uuid.UUID, removal: Awaitable[bool]) -> bool:
        """False once storage has refused ``_FAILURES_IN_A_ROW`` in a row: it is down,
        and the pass stops rather than wait out a timeout per item."""
        nonlocal done, failures
        try:
            done += int(await removal)
        except StorageError as error:
            failures += 1
            log.warning("storage.removal_deferred", jobId=str(job_id), error=type(error).__name__)
            return failures < _FAILURES_IN_A_ROW
        failures = 0
        return True

    for pending in files:
        if not await attempt(pending.job_id, remove_render_files(ctx, pending)):
            return done
    for job in inputs:
        if not await attempt(job.id, remove_job_inputs(ctx, job)):
            return done
    return done
