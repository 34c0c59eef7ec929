"""Whether a submission may go ahead: its key's earlier job, the in-flight slot, the quota.

Everything here runs before any image is decoded, so a user who may not submit
costs no decode.
"""

from __future__ import annotations

import asyncio
import uuid

from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.submit_request import SubmitCommand, SubmitResult
from kit.errors import IdempotencyKeyReused, LimitExceeded, TooManyInflight
from kit.logging import get_logger
from kit.timefmt import iso_utc

log = get_logger("generation.submission")


async def find_replay(
    ctx: GenerationContext, command: SubmitCommand, request_fingerprint: str
) -> SubmitResult | None:
    """The job an earlier request under the same key created; a different request is refused."""
    if not command.idempotency_key:
        return None
    async with ctx.reads() as stores:
        existing = await stores.jobs.get_by_idempotency_key(
            command.owner_id, command.idempotency_key
        )
    if existing is None:
        return None
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    log.info("job.replayed", **jobs.log_fields(existing, existing.status))
    return SubmitResult(existing, replayed=True)


async def key_is_used(ctx: GenerationContext, command: SubmitCommand) -> bool:
    """Whether an earlier request of the owner under the command's key created a job."""
    if not command.idempotency_key:
        return False
    async with ctx.reads() as stores:
        existing = await stores.jobs.get_by_idempotency_key(
            command.owner_id, command.idempotency_key
        )
    return existing is not None


async def admit_or_replay(
    ctx: GenerationContext, command: SubmitCommand, request_fingerprint: str
) -> SubmitResult | None:
    """None when the owner may submit; a TOO_MANY_INFLIGHT may be a parallel request's
    under the same key, whose job is then the answer."""
    try:
        await admit(ctx, command.owner_id)
    except TooManyInflight:
        replay = await find_replay(ctx, command, request_fingerprint)
        if replay is None:
            raise
        return replay
    return None


async def admit(ctx: GenerationContext, owner_id: uuid.UUID) -> None:
    """Refuse an owner who has a job in flight (409) or no generations left (402).

    The in-flight slot and the quota are asked at once (the submission waits for the
    slower of the two, not for both in turn); the answers are read in the documented
    order, so an owner with a job in flight is told 409 whatever the usage service says."""
    inflight, quota = await asyncio.gather(
        _has_inflight(ctx, owner_id), ctx.usage.quota(owner_id), return_exceptions=True
    )
    if isinstance(inflight, BaseException):
        raise inflight
    if inflight:
        raise TooManyInflight()
    if isinstance(quota, BaseException):
        raise quota
    if quota.remaining <= 0:
        raise LimitExceeded(periodEnd=iso_utc(quota.period_end))


async def _has_inflight(ctx: GenerationContext, owner_id: uuid.UUID) -> bool:
    async with ctx.reads() as stores:
        return await stores.jobs.has_inflight(owner_id)
