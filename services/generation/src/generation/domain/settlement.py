"""Charges and refunds: every debit belongs to one job; a failed job is refunded once.

The job row records what is known to be done at the usage service
(``charge_state``, ``refund_state``); the usage service's own idempotency makes
every retry harmless. Whatever cannot be done now is left ``pending`` for the
sweep to finish.
"""

from __future__ import annotations

from generation import metrics
from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.records import Job
from kit.errors import DomainError, LimitExceeded
from kit.logging import get_logger

log = get_logger("generation.settlement")


async def refund(ctx: GenerationContext, job: Job) -> bool:
    """Give the job's generation back; True when this call recorded the refund (False
    when it was deferred, or another instance recorded it first: the usage service's
    idempotency made the second credit a replay, and it is logged and counted once)."""
    try:
        await ctx.usage.credit(job.owner_id, job.id, reason=f"job_{job.status}")
    except DomainError as error:
        log.warning(
            "ledger.refund_deferred",
            **jobs.log_fields(job),
            code=error.code,
        )
        metrics.settlement("refund", "deferred")
        return False
    async with ctx.transactions() as tx:
        recorded = await tx.jobs.mark_refunded(job.id)
    if recorded:
        log.info("ledger.refunded", **jobs.log_fields(job))
        metrics.settlement("refund", "done")
    return recorded


async def settle_unanswered_debit(ctx: GenerationContext, job: Job) -> bool:
    """Give back whatever was debited for a job that ended without output while its
    debit went unanswered (the call failed or was cut off after the usage service may
    have recorded it); True once settled. The credit answers whether a debit existed,
    and the job records it: charged and refunded, or never to be charged. False when
    deferred, or settled by another instance first (logged and counted there)."""
    try:
        debited = await ctx.usage.credit(job.owner_id, job.id, reason=f"job_{job.status}")
    except DomainError as error:
        log.warning("ledger.refund_deferred", **jobs.log_fields(job), code=error.code)
        metrics.settlement("refund", "deferred")
        return False
    async with ctx.transactions() as tx:
        settled = await tx.jobs.settle_unanswered_debit(job.id, debited)
    if not settled:
        return False
    if debited:
        log.info("ledger.refunded", **jobs.log_fields(job))
        metrics.settlement("refund", "done")
    else:
        log.info("ledger.charge_waived", **jobs.log_fields(job), cause="never_debited")
        metrics.settlement("debit", "waived")
    return True


async def charge(ctx: GenerationContext, job: jobs.JobRef) -> Job | None:
    """Debit the job: the job as recorded charged, or None when the debit was deferred
    (left for the sweep) or already recorded. Raises LimitExceeded."""
    try:
        charged = await ctx.usage.debit(job.owner_id, job.id)
    except LimitExceeded:
        raise
    except DomainError as error:
        log.warning("ledger.debit_deferred", **jobs.log_fields(job), code=error.code)
        metrics.settlement("debit", "deferred")
        return None
    if not charged:
        # The usage service voided the job (a credit came first: the job ended and was
        # settled without a charge, or an operator credited it) and wrote nothing: it will
        # never be charged. Recorded as waived (if not already), or the sweep would ask
        # again on every pass and admission would count the debit pending for ever.
        async with ctx.transactions() as tx:
            await tx.jobs.mark_charge_waived(job.id)
        log.info("ledger.charge_waived", **jobs.log_fields(job), cause="debit_voided")
        metrics.settlement("debit", "waived")
        return None
    async with ctx.statements() as stores:
        update = await stores.jobs.mark_charged(job.id)
    current = update.job
    if current is None:
        # Recorded by another writer first (two sweeps, or the submission and a sweep):
        # the debit was a replay at the usage service; logged and counted there.
        return None
    log.info("ledger.debited", **jobs.log_fields(job, current.status))
    metrics.settlement("debit", "done")
    if update.refund_due:
        # The job ended while the debit was in flight: give it straight back.
        await refund(ctx, current)
    return current


async def waive_charge(ctx: GenerationContext, job: jobs.JobRef) -> None:
    """Record that ``job`` is never to be charged: its debit was refused (the plan
    shrank) after its run had already happened. Never charged past the plan."""
    async with ctx.transactions() as tx:
        await tx.jobs.mark_charge_waived(job.id)
    log.warning("ledger.charge_waived", **jobs.log_fields(job))
    metrics.settlement("debit", "waived")
