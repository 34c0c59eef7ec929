"""Submitting a generation, in this order:

1. idempotency lookup: the same key from the same owner returns the same job
   (a different request under the same key is refused) (``admission``);
2. validation and moderation of the fields (nothing stored yet) (``modes``);
3. one-in-flight pre-check (a refusal looks the key up again: a parallel
   request with the same key may hold the slot) and the quota check, asked at
   once and answered in that order, both finished before any image is decoded
   (``admission``), then the images checked and cleaned (``input_storage``);
4. inputs (metadata stripped) uploaded to ``private/<owner>/inputs/<uuid>.<ext>``
   (a refine's source variant copied there too, as input1) (``input_storage``). A
   JPEG that keeps its pixels is stripped first and uploaded while a decode
   worker proves it whole; a refusal then removes what was uploaded, so the answer
   and what is left behind are those of checking first;
5. the job row, ``starting``: the partial unique index is the real in-flight
   guard (``job_record``);
6. provider create with signed input URLs and the absolute webhook URL;
7. prediction id attached, then the usage debit (``prediction_start``, which
   also says how each failure unwinds).

The job's writes (insert, attach, charge) are one statement each, sent in
autocommit, and the last one returns the row the answer shows: nothing is read back.

The cleaned copies of the inputs are closed as soon as they are stored, whatever
happens.

An upload whose first bytes already prove it will be refused (``images.prefix_refusal``)
is answered by ``early_answer`` before the rest arrives, with what steps 1 to 3 would
answer for it: the same order, without receiving (or hashing) megabytes first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from generation.domain import jobs
from generation.domain.admission import admit, admit_or_replay, find_replay, key_is_used
from generation.domain.context import GenerationContext
from generation.domain.input_storage import upload_inputs, with_source
from generation.domain.job_record import new_job, record_job
from generation.domain.modes import GenerationInput, validate_generation_input
from generation.domain.prediction_start import StartedJob, start_prediction
from generation.domain.prompts import compose_prompt
from generation.domain.submit_request import SubmitCommand, SubmitResult, fingerprint
from kit.errors import (
    DomainError,
    IdempotencyKeyReused,
    LimitExceeded,
    TooManyInflight,
    ValidationError,
)
from kit.logging import get_logger

log = get_logger("generation.submission")


async def submit_generation(ctx: GenerationContext, command: SubmitCommand) -> SubmitResult:
    """Run the whole submission; see the module docstring for the order."""
    request_fingerprint = fingerprint(command)
    replay = await find_replay(ctx, command, request_fingerprint)
    if replay is not None:
        return replay
    validated = _validated(ctx, command, [upload.field for upload in command.inputs])
    replay = await admit_or_replay(ctx, command, request_fingerprint)
    if replay is not None:
        return replay
    webhook_url = _webhook_url(ctx, command)
    upload_keys = await upload_inputs(ctx, command)
    if command.inputs_stored is not None:
        await command.inputs_stored()
    return await _submit_new(ctx, command, validated, upload_keys, request_fingerprint, webhook_url)


def _validated(
    ctx: GenerationContext, command: SubmitCommand, input_fields: Sequence[str]
) -> GenerationInput:
    """The command's fields checked against its mode (with uploads named ``input_fields``)."""
    return validate_generation_input(
        command.mode,
        command.prompt,
        command.room_type,
        command.style,
        input_fields,
        command.source is not None,
        ctx.config,
    )


async def early_answer(
    ctx: GenerationContext,
    command: SubmitCommand,
    fields: Sequence[str],
    refusal: DomainError,
    decided: Callable[[], Awaitable[None]],
) -> DomainError | None:
    """The answer to a submission of uploads named ``fields``, one of which is already refused
    with ``refusal`` (its bytes are still arriving): the field, in-flight or quota error
    first, as ``submit_generation`` would answer, else ``refusal``.

    None when the answer needs the whole request: its idempotency key names a job (a
    replay or a reused key is decided on the fingerprint of every byte). ``decided`` is
    awaited as soon as it is certain the answer is a refusal, before the checks run.
    """
    if await key_is_used(ctx, command):
        return None
    await decided()
    try:
        _validated(ctx, command, fields)
        await admit(ctx, command.owner_id)
    except (TooManyInflight, LimitExceeded) as error:
        # A parallel request under the same key may hold the slot, or have taken the
        # last generation (``admit_or_replay``).
        # The sender was told to stop, so this request will not come whole; and a job
        # under its key came from other bytes (these are refused: the same bytes would
        # have been too), which the whole request would be answered as a reused key.
        return IdempotencyKeyReused() if await key_is_used(ctx, command) else error
    except DomainError as error:
        return error
    return refusal


async def _submit_new(
    ctx: GenerationContext,
    command: SubmitCommand,
    validated: GenerationInput,
    upload_keys: list[str],
    request_fingerprint: str,
    webhook_url: str,
) -> SubmitResult:
    """Steps 4 (the refined source) to 7 for a request that is not a replay, its
    uploads stored."""
    input_keys = await with_source(ctx, command, upload_keys)
    prompt = compose_prompt(
        validated.mode,
        validated.prompt,
        ctx.config.styles.get(validated.style or ""),
        ctx.config.room_types.get(validated.room_type or ""),
    )
    job = new_job(ctx, command, validated, input_keys, request_fingerprint, prompt)
    winner = await record_job(ctx, job, command)  # logs and counts ``starting``
    if winner is not None:
        return winner
    current = await start_prediction(
        ctx, StartedJob(job.id, job.owner_id), prompt, input_keys, webhook_url
    )
    if current is not None and current.status != jobs.SUCCEEDED:
        return SubmitResult(current.view(), replayed=False)
    # Canceled meanwhile, or its run (adopted from its webhook: a lost create answer)
    # already ended with a render: the job as GET shows it.
    async with ctx.reads() as stores:
        view = await stores.reads.view(job.owner_id, job.id)
    if view is None:  # jobs are never removed: a missing row is a broken database
        raise LookupError(f"job {job.id} vanished after it was written")
    return SubmitResult(view, replayed=False)


def _webhook_url(ctx: GenerationContext, command: SubmitCommand) -> str:
    base = ctx.webhook_base_url or command.request_base_url
    if not base or not base.startswith(("http://", "https://")):
        raise ValidationError("The request's base URL is missing; cannot build the webhook URL.")
    return base.rstrip("/") + ctx.config.replicate.webhook_path
