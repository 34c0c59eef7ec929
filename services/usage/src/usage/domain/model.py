"""The ledger's domain types and the validation of incoming commands."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kit.errors import ValidationError
from kit.ids import parse_uuid
from usage.domain.periods import Period

MAX_KEY_LENGTH = 200
MAX_REASON_LENGTH = 100


class EntryKind(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the append-only ledger."""

    owner_id: uuid.UUID
    kind: EntryKind
    amount: int
    job_id: uuid.UUID
    idempotency_key: str
    reason: str
    created_at: datetime
    # The monthly limit a debit was checked against (None: a credit, or an old debit).
    plan_limit: int | None = None
    # The ledger row's id: the order an owner's entries were written in (each is
    # written under the owner's lock). None for an entry not read from the ledger.
    sequence: int | None = None


@dataclass(frozen=True)
class DebitOutcome:
    """What the one-statement debit did.

    ``outcome`` is ``earlier`` (an entry with the key, or the job's debit, existed:
    ``entry``), ``voided`` (the job was settled without a charge: nothing written),
    ``refused`` (nothing left), ``written``, or ``twin`` (the insert met a concurrent
    entry: ``entry``, None if it cannot be found). ``used`` is the period's
    used count after the debit, and ``price_id`` the profile's, read under its lock.
    """

    outcome: str
    price_id: str | None
    used: int
    entry: LedgerEntry | None


@dataclass(frozen=True)
class Quota:
    """A user's plan and figures for one period."""

    plan: str
    price_id: str
    monthly_generations: int
    used: int
    remaining: int
    period: Period


@dataclass(frozen=True)
class LedgerResult:
    """The answer to a debit or credit."""

    recorded: bool
    replayed: bool
    quota: Quota


class JobState(StrEnum):
    """A generation job's status, as the generation service reports it."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"

    @property
    def in_flight(self) -> bool:
        return self in {JobState.STARTING, JobState.PROCESSING}


@dataclass(frozen=True)
class JobFacts:
    """One generation job's charge-relevant facts (from ListJobOutcomes)."""

    job_id: uuid.UUID
    owner_id: uuid.UUID
    status: JobState
    created_at: datetime
    has_output: bool
    # What the generation service believes it recorded here.
    charged: bool
    refunded: bool
    # Settled without a charge on purpose (see JobOutcome.waived in the proto).
    waived: bool = False


@dataclass(frozen=True)
class Discrepancy:
    """One finding of the audit; ``job_id`` is empty for per-period findings."""

    kind: str
    owner_id: str
    job_id: str
    detail: str


@dataclass(frozen=True)
class AuditReport:
    discrepancies: list[Discrepancy]
    jobs_checked: int
    entries_checked: int


def parse_owner_id(raw: str) -> uuid.UUID:
    """A user id must be a UUID (the auth token's ``sub``)."""
    return _parse_uuid(raw, "owner_id")


# A caller names the jobs it saw succeed without seeing their debit recorded; an
# owner has that many only while the usage service is unreachable for long.
MAX_PENDING_JOB_IDS = 100


def parse_pending_job_ids(raw: Sequence[str]) -> frozenset[uuid.UUID]:
    """``GetQuotaRequest.pending_job_ids``: UUIDs, at most ``MAX_PENDING_JOB_IDS``."""
    if len(raw) > MAX_PENDING_JOB_IDS:
        raise ValidationError(
            f"pending_job_ids holds at most {MAX_PENDING_JOB_IDS} ids.", field="pending_job_ids"
        )
    return frozenset(_parse_uuid(item, "pending_job_ids") for item in raw)


def _parse_uuid(raw: str, field: str) -> uuid.UUID:
    try:
        return parse_uuid(raw)
    except ValueError:
        raise ValidationError(f"{field} must be a UUID.", field=field) from None


@dataclass(frozen=True)
class LedgerCommand:
    """A validated debit or credit request."""

    owner_id: uuid.UUID
    job_id: uuid.UUID
    idempotency_key: str
    reason: str

    @classmethod
    def parse(
        cls, owner_id: str, job_id: str, idempotency_key: str, reason: str, default_reason: str
    ) -> LedgerCommand:
        """Checks raw fields; raises ValidationError naming the bad one."""
        # Keys are compared exactly as sent; only blank ones are refused.
        key = idempotency_key
        if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationError(
                f"idempotency_key must be 1 to {MAX_KEY_LENGTH} printable characters.",
                field="idempotency_key",
            )
        cleaned_reason = reason.strip() or default_reason
        if len(cleaned_reason) > MAX_REASON_LENGTH or not cleaned_reason.isprintable():
            raise ValidationError(
                f"reason must be at most {MAX_REASON_LENGTH} printable characters.",
                field="reason",
            )
        return cls(
            owner_id=parse_owner_id(owner_id),
            job_id=_parse_uuid(job_id, "job_id"),
            idempotency_key=key,
            reason=cleaned_reason,
        )

    def entry(self, kind: EntryKind, amount: int, at: datetime) -> LedgerEntry:
        """The ledger row this command would write."""
        return LedgerEntry(
            owner_id=self.owner_id,
            kind=kind,
            amount=amount,
            job_id=self.job_id,
            idempotency_key=self.idempotency_key,
            reason=self.reason,
            created_at=at,
        )
