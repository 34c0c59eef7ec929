"""Submitting a generation (the seeds' Phase 3 step B), in this order:

1. idempotency lookup: the same key from the same owner returns the same job
   (a different request under the same key is refused);
2. validation and moderation of the fields (nothing stored yet);
3. one-in-flight pre-check (a refusal looks the key up again: a parallel
   request with the same key may hold the slot), then the quota check, both
   finished before any image is decoded (a user who may not submit costs no
   decode), then the images checked and cleaned (``decoder``: budgeted workers);
4. inputs (metadata stripped) uploaded to ``private/<owner>/inputs/<uuid>.<ext>``
   (a refine's source variant copied there first, as input1);
5. the job row, ``starting``: the partial unique index is the real in-flight
   guard (a violation is TOO_MANY_INFLIGHT; a duplicate key returns the winner);
6. provider create with signed input URLs and the absolute webhook URL;
7. prediction id attached, then the usage debit (idempotent per job).

Unwinding: a refused row (4-5) removes the uploaded inputs; a provider failure
(6) ends the job ``failed`` (nothing was charged yet, the slot is freed, the
inputs stay referenced by the failed job) and answers UPSTREAM_ERROR; a job
canceled while being submitted is canceled at the provider and never charged;
a debit refused at (7) (the plan changed meanwhile) cancels the prediction and
fails the job with LIMIT_EXCEEDED; a debit that cannot reach the usage service
is finished later by the sweep.

Inputs arrive as files (spooled by the caller, who closes them); the cleaned
copies are temporary files too, closed here when the submission ends, whatever
happens. No step holds a whole upload in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import IO

from sqlalchemy.exc import IntegrityError

from generation import metrics
from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.images import CleanImage
from generation.domain.modes import GenerationInput, validate_generation_input
from generation.domain.prompts import compose_prompt
from generation.domain.provider import PredictionRequest, ProviderError
from generation.domain.refine import SourceRef, copy_source_input
from generation.domain.settlement import charge
from generation.domain.states import ChargeState, RefundState
from generation.persistence.models import GenerationJob
from generation.persistence.repositories import JobRepository, violated_constraint
from kit.db import session_scope
from kit.errors import (
    IdempotencyKeyReused,
    LimitExceeded,
    TooManyInflight,
    UpstreamError,
    ValidationError,
)
from kit.logging import get_logger
from kit.storage import StorageError
from kit.timefmt import iso_utc
from kit.tracing import current_traceparent

log = get_logger("generation.submission")

_INFLIGHT_INDEX = "uq_generation_jobs_one_inflight_per_owner"
_KEY_CONSTRAINT = "uq_generation_jobs_owner_key"


@dataclass(frozen=True)
class RawInput:
    """One upload as received: a seekable file the caller owns (and closes)."""

    field: str
    file: IO[bytes]
    size: int
    # SHA-256 of the bytes, computed while they arrived (for the fingerprint).
    sha256: bytes


@dataclass(frozen=True)
class SubmitCommand:
    owner_id: uuid.UUID
    idempotency_key: str | None
    mode: str
    prompt: str | None
    room_type: str | None
    style: str | None
    inputs: tuple[RawInput, ...]
    request_base_url: str | None
    # Refine: an earlier result of the owner's that becomes input1 (see domain.refine).
    source: SourceRef | None = None


@dataclass(frozen=True)
class SubmitResult:
    job: GenerationJob
    replayed: bool


def fingerprint(command: SubmitCommand) -> str:
    """A digest of everything the request asks for, to detect a reused key."""
    digest = hashlib.sha256()
    for part in (command.mode, command.prompt or "", command.room_type or "", command.style or ""):
        digest.update(part.encode() + b"\x00")
    for item in command.inputs:
        digest.update(item.sha256)
    if command.source is not None:  # absent from plain submissions: old digests still match
        digest.update(f"source:{command.source.job_id}:{command.source.variant_idx}".encode())
    return digest.hexdigest()


async def submit_generation(ctx: GenerationContext, command: SubmitCommand) -> SubmitResult:
    """Run the whole submission; see the module docstring for the order."""
    request_fingerprint = fingerprint(command)
    replay = await _replay(ctx, command, request_fingerprint)
    if replay is not None:
        return replay
    validated = validate_generation_input(
        command.mode,
        command.prompt,
        command.room_type,
        command.style,
        len(command.inputs) + (1 if command.source is not None else 0),
        ctx.config,
    )
    replay = await _precheck_or_replay(ctx, command, request_fingerprint)
    if replay is not None:
        return replay
    images = await _clean_images(ctx, command)
    try:
        return await _submit_new(ctx, command, validated, images, request_fingerprint)
    finally:
        _close_all(images)


async def _precheck_or_replay(
    ctx: GenerationContext, command: SubmitCommand, request_fingerprint: str
) -> SubmitResult | None:
    """Step 3; a TOO_MANY_INFLIGHT may be a parallel request's under the same key."""
    try:
        await _precheck(ctx, command.owner_id)
    except TooManyInflight:
        replay = await _replay(ctx, command, request_fingerprint)
        if replay is None:
            raise
        return replay
    return None


async def _submit_new(
    ctx: GenerationContext,
    command: SubmitCommand,
    validated: GenerationInput,
    images: list[CleanImage],
    request_fingerprint: str,
) -> SubmitResult:
    """Steps 4 to 7 for a request that is not a replay, with its cleaned images."""
    webhook_url = _webhook_url(ctx, command)
    input_keys = await _input_keys(ctx, command, images)
    prompt = compose_prompt(
        validated.mode,
        validated.prompt,
        ctx.config.styles.get(validated.style or ""),
        ctx.config.room_types.get(validated.room_type or ""),
    )
    job = _new_job(ctx, command, validated, input_keys, request_fingerprint)
    job.composed_prompt = prompt  # for support only: never logged nor answered
    inserted = await _insert_job(ctx, job, command)
    if inserted is not job:
        return SubmitResult(inserted, replayed=True)
    log.info(
        "job.submitted",
        ownerId=str(job.owner_id),
        jobId=str(job.id),
        predictionId=job.prediction_id,  # None until the provider accepts: the key is always there
        status=job.status,
        mode=job.mode,
        inputs=len(input_keys),
    )
    metrics.job_transition(jobs.STARTING, "submit")
    await _create_prediction(ctx, job, prompt, input_keys, webhook_url)
    async with ctx.readers() as session:
        current = await JobRepository(session).get(job.id)
    assert current is not None
    return SubmitResult(current, replayed=False)


async def _replay(
    ctx: GenerationContext, command: SubmitCommand, request_fingerprint: str
) -> SubmitResult | None:
    if not command.idempotency_key:
        return None
    async with ctx.readers() as session:
        existing = await JobRepository(session).get_by_idempotency_key(
            command.owner_id, command.idempotency_key
        )
    if existing is None:
        return None
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    log.info(
        "job.replayed",
        **jobs.log_fields(existing, existing.status),
    )
    return SubmitResult(existing, replayed=True)


async def _clean_images(ctx: GenerationContext, command: SubmitCommand) -> list[CleanImage]:
    cleaned: list[CleanImage] = []
    try:
        for item in command.inputs:
            cleaned.append(await ctx.decoder.clean(item.file, item.field))
    except BaseException:
        _close_all(cleaned)
        raise
    return cleaned


def _close_all(images: list[CleanImage]) -> None:
    for image in images:
        image.close()


def _webhook_url(ctx: GenerationContext, command: SubmitCommand) -> str:
    base = ctx.webhook_base_url or command.request_base_url
    if not base or not base.startswith(("http://", "https://")):
        raise ValidationError("The request's base URL is missing; cannot build the webhook URL.")
    return base.rstrip("/") + ctx.config.replicate.webhook_path


async def _precheck(ctx: GenerationContext, owner_id: uuid.UUID) -> None:
    async with ctx.readers() as session:
        if await JobRepository(session).has_inflight(owner_id):
            raise TooManyInflight()
    quota = await ctx.usage.quota(owner_id)
    if quota.remaining <= 0:
        raise LimitExceeded(periodEnd=iso_utc(quota.period_end))


async def _input_keys(
    ctx: GenerationContext, command: SubmitCommand, images: list[CleanImage]
) -> list[str]:
    """Step 4: the refined variant (copied) first, then the uploads."""
    if command.source is None:
        return await _upload_inputs(ctx, command.owner_id, images)
    source_key = await copy_source_input(ctx, command.owner_id, command.source)
    try:
        return [source_key, *await _upload_inputs(ctx, command.owner_id, images)]
    except BaseException:
        await _discard_inputs(ctx, [source_key])
        raise


async def _upload_inputs(
    ctx: GenerationContext, owner_id: uuid.UUID, images: list[CleanImage]
) -> list[str]:
    keys: list[str] = []
    try:
        for image in images:
            key = f"{owner_id}/inputs/{uuid.uuid4()}.{image.extension}"
            image.file.seek(0)
            await ctx.storage.put_file(
                ctx.private_bucket, key, image.file, image.size, image.mime_type
            )
            keys.append(key)
    except StorageError as error:
        await _discard_inputs(ctx, keys)
        log.error("inputs.upload_failed", ownerId=str(owner_id), error=type(error).__name__)
        raise UpstreamError("Your images could not be stored. Please try again.") from error
    return keys


async def _discard_inputs(ctx: GenerationContext, keys: list[str]) -> None:
    """Remove uploaded inputs that no job will reference; loud when it cannot."""
    if not keys:
        return
    try:
        await ctx.storage.remove(ctx.private_bucket, keys)
    except StorageError:
        log.error("inputs.orphaned", bucket=ctx.private_bucket, keys=keys)


def _new_job(
    ctx: GenerationContext,
    command: SubmitCommand,
    validated: GenerationInput,
    input_keys: list[str],
    request_fingerprint: str,
) -> GenerationJob:
    now = ctx.clock.now()
    return GenerationJob(
        id=uuid.uuid4(),
        owner_id=command.owner_id,
        idempotency_key=command.idempotency_key or None,
        request_fingerprint=request_fingerprint,
        mode=validated.mode.value,
        room_type=validated.room_type,
        style=validated.style,
        prompt=validated.prompt,
        input_keys=input_keys,
        source_job_id=command.source.job_id if command.source else None,
        source_variant_idx=command.source.variant_idx if command.source else None,
        status=jobs.STARTING,
        charge_state=ChargeState.NONE,
        refund_state=RefundState.NONE,
        created_at=now,
        updated_at=now,
        traceparent=current_traceparent(),
    )


async def _insert_job(
    ctx: GenerationContext, job: GenerationJob, command: SubmitCommand
) -> GenerationJob:
    """Insert the row; the database decides races the pre-check could not see."""
    try:
        async with session_scope(ctx.sessions) as session:
            await JobRepository(session).insert(job)
        return job
    except IntegrityError as error:
        constraint = violated_constraint(error)
    await _discard_inputs(ctx, list(job.input_keys))
    # A parallel request with the same key can trip either index (whichever is checked first).
    if command.idempotency_key:
        replay = await _replay(ctx, command, job.request_fingerprint)
        if replay is not None:
            return replay.job
    if constraint == _INFLIGHT_INDEX:
        raise TooManyInflight()
    raise IdempotencyKeyReused() if constraint == _KEY_CONSTRAINT else TooManyInflight()


async def _create_prediction(
    ctx: GenerationContext,
    job: GenerationJob,
    prompt: str,
    input_keys: list[str],
    webhook_url: str,
) -> None:
    ttl = ctx.config.uploads.signed_url_ttl_seconds
    fields = {"ownerId": str(job.owner_id), "jobId": str(job.id)}
    try:
        urls = [
            await ctx.storage.presigned_get_url(ctx.private_bucket, key, ttl) for key in input_keys
        ]
        prediction = await ctx.provider.create_prediction(
            PredictionRequest(
                prompt=prompt,
                image_urls=tuple(urls),
                webhook_url=webhook_url,
                webhook_events=ctx.config.replicate.webhook_events,
                output_format=ctx.config.replicate.output_format,
            )
        )
    except (ProviderError, StorageError) as error:
        await _fail_unsubmitted(ctx, job, jobs.UPSTREAM)
        log.error(
            "job.provider_create_failed", **fields, status=jobs.FAILED, error=type(error).__name__
        )
        metrics.job_transition(jobs.FAILED, "submit")
        raise UpstreamError() from error
    except BaseException:
        # Cancelled or crashed mid-call: never leave the in-flight slot held.
        await asyncio.shield(_fail_unsubmitted(ctx, job, jobs.INTERRUPTED))
        raise
    await _attach_and_charge(ctx, job, prediction.id)


async def _fail_unsubmitted(
    ctx: GenerationContext, job: GenerationJob, error: jobs.JobError
) -> None:
    async with session_scope(ctx.sessions) as session:
        await JobRepository(session).mark_ended_without_output(
            job.id, jobs.FAILED, error.code, error.message, ctx.clock.now()
        )


async def _attach_and_charge(
    ctx: GenerationContext, job: GenerationJob, prediction_id: str
) -> None:
    fields = {"ownerId": str(job.owner_id), "jobId": str(job.id), "predictionId": prediction_id}
    try:
        async with session_scope(ctx.sessions) as session:
            repo = JobRepository(session)
            attached = await repo.attach_prediction(job.id, prediction_id, ctx.clock.now())
    except Exception:
        # The database failed right after the provider accepted: do not leave a run
        # nobody will follow. Failing the job may fail too; the sweep then ends it.
        await asyncio.shield(_abandon_prediction(ctx, job, prediction_id))
        raise
    if not attached:
        # Canceled (or ended) while we were submitting: stop the provider's run too.
        await _cancel_quietly(ctx, prediction_id)
        log.info("job.canceled_during_submit", **fields)
        return
    job.prediction_id = prediction_id
    log.info("job.provider_accepted", **fields, status=jobs.STARTING)
    try:
        await charge(ctx, job)
    except LimitExceeded:
        await _cancel_quietly(ctx, prediction_id)
        await _fail_unsubmitted(ctx, job, jobs.OVER_LIMIT)
        log.warning("job.debit_refused", **fields, status=jobs.FAILED)
        metrics.job_transition(jobs.FAILED, "submit")
        raise


async def _abandon_prediction(
    ctx: GenerationContext, job: GenerationJob, prediction_id: str
) -> None:
    await _cancel_quietly(ctx, prediction_id)
    try:
        await _fail_unsubmitted(ctx, job, jobs.INTERRUPTED)
    except Exception:
        log.warning(
            "job.fail_deferred",
            ownerId=str(job.owner_id),
            jobId=str(job.id),
            predictionId=prediction_id,
            status=jobs.STARTING,
        )


async def _cancel_quietly(ctx: GenerationContext, prediction_id: str) -> None:
    try:
        await ctx.provider.cancel_prediction(prediction_id)
    except ProviderError as error:
        log.warning(
            "provider.cancel_failed", predictionId=prediction_id, error=type(error).__name__
        )
