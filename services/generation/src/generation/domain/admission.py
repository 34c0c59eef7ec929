"""Whether a submission may go ahead: its key's earlier job, the in-flight slot, the quota.

Everything here runs before any image is decoded, so a user who may not submit
costs no decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.ports import AdmissionFacts
from generation.domain.submit_request import SubmitCommand, SubmitResult
from kit.errors import IdempotencyKeyReused, LimitExceeded, TooManyInflight, UpstreamError
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
    # Shown as GET shows it: with its variants once succeeded, without inputs once
    # deleted (their files are gone).
    async with ctx.reads() as stores:
        view = await stores.reads.view(command.owner_id, existing.id)
    if view is None:  # jobs are never removed: a missing row is a broken database
        raise LookupError(f"job {existing.id} vanished after its key was found")
    log.info("job.replayed", **jobs.log_fields(existing))
    return SubmitResult(view, replayed=True)


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
    """None when the owner may submit. A refusal may be the work of a parallel request
    under the same key, whose job is then the answer: it holds the slot (409), or its
    debit took the last generation (402)."""
    try:
        await admit(ctx, command.owner_id)
    except (TooManyInflight, LimitExceeded):
        replay = await find_replay(ctx, command, request_fingerprint)
        if replay is None:
            raise
        return replay
    return None


async def admit(ctx: GenerationContext, owner_id: uuid.UUID) -> None:
    """Refuse an owner who has a job in flight (409) or no generations left (402).

    The in-flight slot and the quota are asked at once (the submission waits for the
    slower of the two, not for both in turn); the answers are read in the documented
    order, so an owner with a job in flight is told 409 whatever the usage service says.
    A succeeded job whose debit is still pending (usage was unreachable; the sweep will
    record it) is a generation used, though the usage service may not count it yet:
    without it the next submission could take one past the plan. When that is what
    would refuse the owner, the usage service is asked again, naming the pending jobs:
    a debit recorded whose answer was lost is then counted once, not twice (a 402 while
    ``GET /usage`` shows one left)."""
    facts, quota = await asyncio.gather(
        _facts(ctx, owner_id), ctx.usage.quota(owner_id), return_exceptions=True
    )
    if isinstance(facts, BaseException):
        raise facts
    if facts.inflight:
        raise TooManyInflight()
    if isinstance(quota, BaseException):
        raise quota
    if quota.remaining - facts.pending_debits > 0:
        return
    if facts.pending_debits and quota.remaining > 0:
        # Rare (a debit's answer was lost): one more call, off the usual path. Unanswered,
        # the first answer stands: a 402, as before this question was asked.
        with contextlib.suppress(UpstreamError):
            quota = await ctx.usage.quota(owner_id, facts.pending_job_ids)
        # A usage service deployed before this question ignores the ids: all count.
        counted = len(facts.pending_job_ids) if quota.pending_counted else 0
        if quota.remaining - (facts.pending_debits - counted) > 0:
            return
    raise LimitExceeded(periodEnd=iso_utc(quota.period_end))


async def _facts(ctx: GenerationContext, owner_id: uuid.UUID) -> AdmissionFacts:
    async with ctx.reads() as stores:
        return await stores.jobs.admission_facts(owner_id)
