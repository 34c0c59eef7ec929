"""Everything the domain needs from outside, as protocols: the stores and the usage service.

``persistence`` implements the stores over SQL and returns the values of
``domain.records``; the domain sees no SQL, no ORM row and no transport.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from generation.domain.jobs import JobView, VariantRef
from generation.domain.records import (
    ChargeUpdate,
    InsertOutcome,
    Job,
    NewJob,
    PendingFiles,
    StoredVariant,
    TerminalUpdate,
)


@dataclass(frozen=True)
class AdmissionFacts:
    """What generation itself knows of an owner when a submission is admitted."""

    # A job of theirs is ``starting`` or ``processing``.
    inflight: bool
    # Succeeded jobs whose debit is still to be recorded (the usage service could not
    # be reached then; the sweep will): the usage service's ``remaining`` counts none.
    pending_debits: int
    # The ids of up to ``PENDING_IDS_NAMED`` of them, to ask the usage service which it
    # holds after all (a debit recorded whose answer was lost).
    pending_job_ids: tuple[uuid.UUID, ...] = ()


# GetQuotaRequest.pending_job_ids takes at most this many.
PENDING_IDS_NAMED = 100


@dataclass(frozen=True)
class QuotaSnapshot:
    remaining: int
    period_end: datetime
    # The pending jobs named in the request are counted in ``remaining`` (False from a
    # usage service that predates them: it ignored them).
    pending_counted: bool = False


class UsageGateway(Protocol):
    """The usage service, as the generation flows use it."""

    async def quota(
        self, owner_id: uuid.UUID, pending_job_ids: Sequence[uuid.UUID] = ()
    ) -> QuotaSnapshot:
        """Remaining generations this period (raises UpstreamError when unreachable),
        counting each of ``pending_job_ids`` the ledger holds no debit of as used."""
        ...

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        """Charge one generation for the job; idempotent per job. True when the job is
        charged; False when it never will be: a credit already settled it without a
        charge (the job's debit arrived after the job was waived).

        Raises kit.errors.LimitExceeded when nothing is left, UpstreamError when
        the usage service cannot be reached.
        """
        ...

    async def credit(self, owner_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> bool:
        """Give the job's generation back; idempotent per job. True when the job was
        debited (its generation is back, now or by an earlier call), False when it never
        was (nothing to give back)."""
        ...


class JobStore(Protocol):
    """Jobs: lookups and conditional writes (a write that finds nothing to change says so)."""

    async def get(self, job_id: uuid.UUID) -> Job | None:
        """The job, whoever owns it."""
        ...

    async def get_by_idempotency_key(self, owner_id: uuid.UUID, key: str) -> Job | None:
        """The owner's job submitted under ``key``."""
        ...

    async def get_by_prediction_id(self, prediction_id: str) -> Job | None:
        """The job the provider's prediction belongs to."""
        ...

    async def admission_facts(self, owner_id: uuid.UUID) -> AdmissionFacts:
        """Whether the owner has a job in flight, and how many debits are pending."""
        ...

    async def insert(self, job: NewJob) -> InsertOutcome:
        """Write the job ``starting``, unless its key or the owner's in-flight slot is taken."""
        ...

    async def attach_prediction(
        self, job_id: uuid.UUID, prediction_id: str, now: datetime
    ) -> Job | None:
        """Record the provider's id, only while the job is still ``starting`` without
        one: the job as written, or None when it had left ``starting`` or has a run."""
        ...

    async def mark_processing(self, job_id: uuid.UUID, started_at: datetime, now: datetime) -> bool:
        """``starting`` to ``processing``."""
        ...

    async def mark_succeeded(
        self,
        job_id: uuid.UUID,
        render_id: uuid.UUID,
        variants: Sequence[VariantRef],
        completed_at: datetime,
        now: datetime,
    ) -> bool:
        """An in-flight job to ``succeeded`` with its render and variants, all or nothing
        (one statement: it needs no transaction around it); False when no longer in flight."""
        ...

    async def mark_ended_without_output(
        self,
        job_id: uuid.UUID,
        status: str,
        error_code: str,
        error_message: str,
        now: datetime,
        *,
        unless_attached: bool = False,
        message_if_owner_asked: str | None = None,
    ) -> TerminalUpdate:
        """End an in-flight job failed/canceled; a charged one becomes refund-pending.
        ``unless_attached``: only while the job has no run attached;
        ``message_if_owner_asked``: the message instead when its owner asked to cancel it."""
        ...

    async def request_cancel(self, job_id: uuid.UUID, now: datetime) -> None:
        """Record that the owner asked to cancel the in-flight job (before the provider
        is asked): whoever ends it canceled then says so."""
        ...

    async def mark_charged(self, job_id: uuid.UUID) -> ChargeUpdate:
        """Record the debit: the job as written, and whether it already ended and needs
        a refund."""
        ...

    async def mark_charge_waived(self, job_id: uuid.UUID) -> None:
        """Record that the job is never to be charged (the plan shrank after its run)."""
        ...

    async def settle_unanswered_debit(self, job_id: uuid.UUID, debited: bool) -> bool:
        """Record what a credit found for a job that ended without output while its
        debit went unanswered: charged and refunded when a debit had been recorded,
        never to be charged otherwise. False when another writer settled it first."""
        ...

    async def mark_refunded(self, job_id: uuid.UUID) -> bool:
        """Record a pending refund as done; False when another writer did first."""
        ...

    async def claim_poll(self, job_id: uuid.UUID, now: datetime, throttle: timedelta) -> bool:
        """Take the right to poll the job's prediction now (False while a poll is recent)."""
        ...

    async def inflight_needing_poll(
        self, older_than: datetime, poll_before: datetime, limit: int
    ) -> Sequence[Job]:
        """In-flight jobs with a prediction whose state has not moved for a while."""
        ...

    async def overdue_inflight(
        self, created_before: datetime, unsubmitted_before: datetime, limit: int
    ) -> Sequence[Job]:
        """In-flight jobs past the overall timeout, or stuck without a prediction id."""
        ...

    async def needing_settlement(self, older_than: datetime, limit: int) -> Sequence[Job]:
        """Jobs whose refund is pending, or that reached the provider but were never
        recorded as charged (in flight or succeeded: to charge; ended without output:
        to give back a debit whose answer was lost); give-backs first, then oldest."""
        ...

    async def gives_back_due(self, owner_id: uuid.UUID, except_job: uuid.UUID) -> bool:
        """Whether another job of the owner still has a generation to give back (a
        pending refund, or the unanswered debit of a job that ended without output)."""
        ...

    async def audit_page(
        self, owner_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> Sequence[Job]:
        """Jobs ordered by id, for the usage audit."""
        ...


class RenderStore(Protocol):
    """Renders and their variants: inserted once, never duplicated."""

    async def variants_without_thumbnail(self, limit: int) -> Sequence[StoredVariant]:
        """Variants of live renders stored before thumbnails existed (oldest first)."""
        ...

    async def set_thumbnail(self, variant: VariantRef, render_id: uuid.UUID) -> bool:
        """Record a variant's thumbnail and size, unless another run already did or the
        render was deleted meanwhile (False)."""
        ...

    async def soft_delete(self, job_id: uuid.UUID, now: datetime) -> bool:
        """Hide the job's render from now on."""
        ...

    async def outputs_of(self, job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these jobs have at least one stored variant."""
        ...


class RemovalStore(Protocol):
    """What is still to remove from storage for each job (see domain/cleanup.py)."""

    async def mark_deleted(self, job_id: uuid.UUID, now: datetime) -> bool:
        """Record a finished job's deletion (once): its inputs and render files become due."""
        ...

    async def files_pending_removal(
        self, job_id: uuid.UUID | None, limit: int, now: datetime
    ) -> Sequence[PendingFiles]:
        """Jobs whose render files are due for removal and not yet known to be gone."""
        ...

    async def mark_files_removed(
        self, pending: PendingFiles, now: datetime, late_writers: timedelta
    ) -> bool:
        """Record the removal, unless a late writer stored files after it was read or
        may still store some (the prefix is then due again later)."""
        ...

    async def claim_stray_files(self, job_id: uuid.UUID, now: datetime) -> PendingFiles | None:
        """A late writer's files for an ended job without a live render: due again."""
        ...

    async def postpone_removal(self, job_id: uuid.UUID, now: datetime) -> None:
        """Send a job whose removal storage refused behind every job due before ``now``
        (its render files and its inputs alike)."""
        ...

    async def inputs_pending_removal(
        self, job_ids: Sequence[uuid.UUID] | None, limit: int
    ) -> Sequence[Job]:
        """Deleted jobs whose inputs are not yet known to be removed (oldest first)."""
        ...

    async def keys_in_use(
        self, owner_id: uuid.UUID, job_id: uuid.UUID, keys: Sequence[str]
    ) -> set[str]:
        """Which of ``keys`` another undeleted job of the same owner still names as input."""
        ...

    async def mark_inputs_removed(self, job_id: uuid.UUID, now: datetime) -> None:
        """Record that a deleted job's inputs are gone."""
        ...


class JobReads(Protocol):
    """What clients are shown: jobs with their visible render and variants."""

    async def view(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> JobView | None:
        """The owner's job, or None (missing, or someone else's)."""
        ...

    async def views(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobView]:
        """The jobs named, by id, whoever owns them (missing ones left out)."""
        ...

    async def page(
        self,
        owner_id: uuid.UUID,
        status: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobView]:
        """Up to ``limit`` of the owner's jobs older than ``before``, newest first."""
        ...


class UnitOfWork(Protocol):
    """One transaction's stores."""

    @property
    def jobs(self) -> JobStore: ...

    @property
    def renders(self) -> RenderStore: ...

    @property
    def removals(self) -> RemovalStore: ...

    @property
    def reads(self) -> JobReads: ...


# Opens one transaction: commits when the block succeeds, rolls back when it raises.
# The context's ``reads`` opener gives stores for reading only, in autocommit.
Transactions = Callable[[], AbstractAsyncContextManager[UnitOfWork]]
