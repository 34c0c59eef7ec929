"""Writing a submission's job row, ``starting``.

The database is the real one-in-flight guard (the admission check cannot see a
parallel request): a refused row removes the uploaded inputs, and a parallel
request with the same key, which can trip either guard, answers with its job.
"""

from __future__ import annotations

import asyncio
import uuid

from generation import metrics
from generation.domain import jobs
from generation.domain.admission import find_replay
from generation.domain.context import GenerationContext
from generation.domain.input_storage import discard_inputs
from generation.domain.modes import GenerationInput
from generation.domain.prediction_start import fail_interrupted
from generation.domain.records import Inserted, InsertOutcome, KeyTaken, NewJob
from generation.domain.submit_request import SubmitCommand, SubmitResult
from kit.errors import IdempotencyKeyReused, TooManyInflight
from kit.logging import get_logger
from kit.tracing import current_traceparent

log = get_logger("generation.submission")


def new_job(
    ctx: GenerationContext,
    command: SubmitCommand,
    validated: GenerationInput,
    input_keys: list[str],
    request_fingerprint: str,
    composed_prompt: str,
) -> NewJob:
    """The row to write for a validated request whose inputs are stored."""
    return NewJob(
        id=uuid.uuid4(),
        owner_id=command.owner_id,
        idempotency_key=command.idempotency_key or None,
        request_fingerprint=request_fingerprint,
        mode=validated.mode.value,
        room_type=validated.room_type,
        style=validated.style,
        prompt=validated.prompt,
        composed_prompt=composed_prompt,
        input_keys=tuple(input_keys),
        source_job_id=command.source.job_id if command.source else None,
        source_variant_idx=command.source.variant_idx if command.source else None,
        created_at=ctx.clock.now(),
        traceparent=current_traceparent(),
    )


async def record_job(
    ctx: GenerationContext, job: NewJob, command: SubmitCommand
) -> SubmitResult | None:
    """None once the row is written; else the winner of a race under the same key.

    Raises TooManyInflight when another job holds the owner's slot, and
    IdempotencyKeyReused when the key is taken by a different request.
    """
    # One statement (the lookup after a refusal is a plain read): no transaction needed.
    written = asyncio.ensure_future(_insert(ctx, job))
    try:
        outcome = await asyncio.shield(written)
    except asyncio.CancelledError:
        # Cancelled (the caller left) while the row was being written: in autocommit it
        # may commit all the same and hold the owner's slot, so the write is let finish
        # and a written job ends as any submission interrupted before the provider.
        await asyncio.shield(_end_if_written(ctx, job, written))
        raise
    except Exception:
        # The write failed (the database went away); it may have committed all the
        # same, its answer lost. Inputs no row references must not stay behind.
        await asyncio.shield(_discard_unless_written(ctx, job))
        raise
    if isinstance(outcome, Inserted):
        _announce(job)
        return None
    await discard_inputs(ctx, list(job.input_keys))
    if command.idempotency_key:
        replay = await find_replay(ctx, command, job.request_fingerprint)
        if replay is not None:
            return replay
    if isinstance(outcome, KeyTaken):
        raise IdempotencyKeyReused()
    raise TooManyInflight()


def _announce(job: NewJob) -> None:
    """The job's first transition, ``starting``: logged and counted once its row is
    written, also when the submission that wrote it goes no further."""
    log.info(
        "job.submitted",
        # No prediction until the provider accepts: the key is always there.
        **jobs.job_fields(job.owner_id, job.id, None, jobs.STARTING),
        mode=job.mode,
        inputs=len(job.input_keys),
    )
    metrics.job_transition(jobs.STARTING, "submit")


async def _insert(ctx: GenerationContext, job: NewJob) -> InsertOutcome:
    async with ctx.statements() as stores:
        return await stores.jobs.insert(job)


async def _end_if_written(
    ctx: GenerationContext, job: NewJob, written: asyncio.Future[InsertOutcome]
) -> None:
    try:
        outcome = await written
    except Exception:
        await _discard_unless_written(ctx, job)
        return
    if not isinstance(outcome, Inserted):
        await discard_inputs(ctx, list(job.input_keys))
        return
    _announce(job)
    try:
        # Logged and counted there, when it is this write that ends the job.
        await fail_interrupted(ctx, job.id, job.owner_id)
    except Exception as error:  # the sweep ends a job left starting
        log.warning(
            "job.interrupted_insert_unresolved",
            # Status unknown: the row may or may not have been written.
            **jobs.job_fields(job.owner_id, job.id, None, None),
            error=type(error).__name__,
        )


async def _discard_unless_written(ctx: GenerationContext, job: NewJob) -> None:
    """Remove the job's inputs unless its row was written after all (then they are its)."""
    try:
        async with ctx.transactions() as tx:
            written = await tx.jobs.get(job.id) is not None
    except Exception as error:
        # Unknown: removing them could take a written job's inputs. Left, and said.
        log.error(
            "inputs.orphaned",
            jobId=str(job.id),
            bucket=ctx.private_bucket,
            keys=list(job.input_keys),
            error=type(error).__name__,
        )
        return
    if written:
        _announce(job)  # its answer was lost: the sweep ends it (INTERRUPTED)
    else:
        await discard_inputs(ctx, list(job.input_keys))
