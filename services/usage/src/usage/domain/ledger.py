"""Quota, debits, credits and plan changes: the ledger rules.

Period. The calendar month in UTC (see :mod:`usage.domain.periods`). Every
answer carries the period's start and (exclusive) end.

Used and remaining. ``used`` = the debits recorded in the period minus the
credits of *those* debits; ``remaining = max(0, monthly_generations - used)``.

Credits count in the period of their debit. A credit row carries the time it
was recorded, but it gives back the generation of the month in which the job
was charged: a refund for a job debited on 31 October and failed on 1 November
restores October's quota, not November's. This keeps a month's quota from being
inflated by refunds of another month, and makes ``used`` the number of paid
jobs of the period that were not refunded.

Debit. One statement (the database function ``usage_debit``), so one round trip
and one transaction: create the user's profile row if missing and lock it
(an upsert that takes the row lock), so debits of one user are serialized; look for an earlier
debit with the same idempotency key or for the same job (a replay: answer
``replayed = true``, write nothing); refuse with LIMIT_EXCEEDED when nothing is
left (``details.periodEnd`` says when the quota resets); else append the debit.
Unique constraints back this up: a debit that still collides on insert (a
concurrent twin) writes nothing and is answered as a replay.

Credit. At most once per job and only for a job that was debited (to the same
user): otherwise nothing is written and ``recorded = false``. Idempotent on the
key and on the job. The credit's amount is the debit's amount.

Voided jobs. A credit that finds no debit of its job records the job as voided:
the job was settled without a charge (generation records it waived), so a debit of
it still on its way (its call cut off after it was sent) must not land afterwards,
with nothing left to give it back. ``usage_debit`` answers ``voided`` for such a job
and writes nothing: ``recorded = false`` (the credit and the debit both take the
owner's profile lock first, so whichever comes second sees the other).

A key, or a job, already used for a *different* entry (another user, another
kind) is refused with IDEMPOTENCY_KEY_REUSED rather than silently replayed.

SetPlan. Takes effect at once. Debits already recorded in the current month
stay; the month's figures follow the new plan: ``remaining = max(0, new
monthly - used)``. An upgrade therefore frees the difference at once, and a
downgrade below ``used`` leaves nothing until the next month. An empty
``price_id`` (or ``free``) returns the user to the free plan.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NoReturn

from kit.clock import Clock
from kit.errors import IdempotencyKeyReused, InternalError, LimitExceeded
from kit.logging import get_logger
from kit.timefmt import iso_utc
from usage import metrics
from usage.domain.model import EntryKind, LedgerCommand, LedgerEntry, LedgerResult, Quota
from usage.domain.periods import Period, month_of
from usage.domain.plans import PlanCatalog
from usage.domain.ports import Transactions, UnitOfWork

log = get_logger("usage.ledger")

# One generation costs one unit; the ledger stores amounts so this may change.
GENERATION_COST = 1


class LedgerService:
    """The ledger's use cases; each call is one transaction."""

    def __init__(
        self,
        transactions: Transactions,
        plans: PlanCatalog,
        clock: Clock,
        reads: Transactions | None = None,
        statements: Transactions | None = None,
    ) -> None:
        self._transactions = transactions
        # The debit is one statement; ``statements`` opens autocommit stores for it.
        self._statements = statements or transactions
        # Quota answers need no transaction; ``reads`` opens autocommit stores.
        self._reads = reads or transactions
        self._plans = plans
        self._clock = clock

    async def get_quota(
        self, owner_id: uuid.UUID, pending: frozenset[uuid.UUID] = frozenset()
    ) -> Quota:
        """The user's plan and the current period's figures; each of ``pending`` (jobs
        the caller saw succeed without seeing their debit recorded) that the ledger
        neither debited nor voided counts as used, so one recorded counts once."""
        now = self._clock.now()
        async with self._reads() as uow:
            price_id, used = await uow.ledger.quota_facts(owner_id, month_of(now), pending)
        return self._quota_of(price_id, now, used)

    async def set_plan(self, owner_id: uuid.UUID, price_id: str) -> Quota:
        """Puts the user on the plan of ``price_id`` (empty: free)."""
        stored = self._plans.price_id_to_store(price_id)
        now = self._clock.now()
        async with self._transactions() as uow:
            await uow.profiles.set_price_id(owner_id, stored, now)
            quota = await self._quota(uow, owner_id, stored, now)
        log.info("plan.changed", ownerId=str(owner_id), plan=quota.plan, priceId=quota.price_id)
        metrics.plan_changed(quota.plan)
        return quota

    async def debit(self, command: LedgerCommand) -> LedgerResult:
        """Atomic check-and-debit of one job (see the module docstring).

        One statement in autocommit, its own transaction: the store's ``debit`` locks
        the profile, looks for an earlier entry, checks what is left and appends, in
        one round trip.
        """
        now = self._clock.now()
        period = month_of(now)
        entry = command.entry(EntryKind.DEBIT, GENERATION_COST, now)
        async with self._statements() as uow:
            done = await uow.ledger.debit(
                entry, period, self._plans.paid_limits(), self._plans.free.monthly_generations
            )
        earlier = None
        if done.outcome in {"earlier", "twin"}:
            if done.entry is None:
                # ON CONFLICT waited for the other writer; its row must be visible now.
                raise InternalError("a ledger insert collided with an entry that cannot be found")
            earlier = self._same_command(EntryKind.DEBIT, command, done.entry)
        elif done.outcome == "refused":
            self._refuse(command, done.price_id, done.used, period)
        quota = self._quota_of(done.price_id, now, done.used)
        if done.outcome == "voided":
            log.info(
                "ledger.debit_voided",
                ownerId=str(command.owner_id),
                jobId=str(command.job_id),
                cause="settled_without_charge",
            )
            metrics.debit_voided()
            return LedgerResult(recorded=False, replayed=False, quota=quota)
        return self._answer(EntryKind.DEBIT, command, quota, replayed=earlier is not None)

    async def credit(self, command: LedgerCommand) -> LedgerResult:
        """Gives one debited job's generation back, at most once."""
        now = self._clock.now()
        async with self._transactions() as uow:
            price_id = await uow.profiles.lock(command.owner_id, now)
            earlier = await self._earlier(uow, EntryKind.CREDIT, command)
            recorded = True
            if earlier is None:
                recorded, earlier = await self._record_credit(uow, command, now)
            quota = await self._quota(uow, command.owner_id, price_id, now)
        if not recorded:
            log.info(
                "ledger.credit_skipped",
                ownerId=str(command.owner_id),
                jobId=str(command.job_id),
                cause="no_debit",
            )
            metrics.credit_not_debited()
            return LedgerResult(recorded=False, replayed=False, quota=quota)
        return self._answer(EntryKind.CREDIT, command, quota, replayed=earlier is not None)

    async def _record_credit(
        self, uow: UnitOfWork, command: LedgerCommand, now: datetime
    ) -> tuple[bool, LedgerEntry | None]:
        """Refunds the user's debit of the job: (recorded, the twin a collision found)."""
        debit = await uow.ledger.find_by_job(EntryKind.DEBIT, command.job_id)
        if debit is None:
            await uow.ledger.void(command.owner_id, command.job_id, now)
            return False, None
        if debit.owner_id != command.owner_id:
            return False, None
        if await uow.ledger.insert(command.entry(EntryKind.CREDIT, debit.amount, now)):
            return True, None
        return True, await self._twin(uow, EntryKind.CREDIT, command)

    async def _earlier(
        self, uow: UnitOfWork, kind: EntryKind, command: LedgerCommand
    ) -> LedgerEntry | None:
        """The entry this command repeats, if any; refuses a key or job used otherwise."""
        found = await uow.ledger.find_earlier(kind, command.idempotency_key, command.job_id)
        if found is None:
            return None
        return self._same_command(kind, command, found)

    @staticmethod
    def _same_command(kind: EntryKind, command: LedgerCommand, found: LedgerEntry) -> LedgerEntry:
        """``found`` if it is this command's entry; refuses a key or job used otherwise."""
        if (found.kind, found.owner_id, found.job_id) != (kind, command.owner_id, command.job_id):
            log.warning(
                "ledger.key_conflict",
                ownerId=str(command.owner_id),
                jobId=str(command.job_id),
                kind=str(kind),
            )
            metrics.key_conflict(kind.value)
            raise IdempotencyKeyReused(
                "This idempotency key or job was already used for a different ledger entry."
            )
        return found

    async def _twin(self, uow: UnitOfWork, kind: EntryKind, command: LedgerCommand) -> LedgerEntry:
        """The concurrent entry an insert collided with (committed by the time we look)."""
        twin = await self._earlier(uow, kind, command)
        if twin is None:
            # ON CONFLICT waited for the other writer; its row must be visible now.
            raise InternalError("a ledger insert collided with an entry that cannot be found")
        return twin

    def _refuse(
        self, command: LedgerCommand, price_id: str | None, used: int, period: Period
    ) -> NoReturn:
        """LimitExceeded: nothing is left of the period's generations."""
        plan = self._plans.resolve(price_id)
        log.info(
            "ledger.debit_refused",
            ownerId=str(command.owner_id),
            jobId=str(command.job_id),
            plan=plan.name,
            used=used,
            monthlyGenerations=plan.monthly_generations,
        )
        metrics.debit_refused()
        raise LimitExceeded(periodEnd=iso_utc(period.end))

    async def _quota(
        self, uow: UnitOfWork, owner_id: uuid.UUID, price_id: str | None, now: datetime
    ) -> Quota:
        used = await uow.ledger.used_in(owner_id, month_of(now))
        return self._quota_of(price_id, now, used)

    def _quota_of(self, price_id: str | None, now: datetime, used: int) -> Quota:
        plan = self._plans.resolve(price_id)
        period = month_of(now)
        used = max(0, used)
        return Quota(
            plan=plan.name,
            price_id=plan.price_id,
            monthly_generations=plan.monthly_generations,
            used=used,
            remaining=max(0, plan.monthly_generations - used),
            period=period,
        )

    @staticmethod
    def _answer(
        kind: EntryKind, command: LedgerCommand, quota: Quota, *, replayed: bool
    ) -> LedgerResult:
        event = "ledger.replayed" if replayed else f"ledger.{kind.value}ed"
        log.info(
            event,
            ownerId=str(command.owner_id),
            jobId=str(command.job_id),
            kind=kind.value,
            plan=quota.plan,
            used=quota.used,
            remaining=quota.remaining,
        )
        metrics.ledger_answer(kind.value, replayed=replayed)
        return LedgerResult(recorded=True, replayed=replayed, quota=quota)
