"""What the stores hand the flows and take from them: plain frozen values, no ORM state.

The persistence layer maps its rows to these (and back); the domain never sees a row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from generation.domain.jobs import JobView


@dataclass(frozen=True)
class Job:
    """A snapshot of one job as the flows need it; every change goes through a store."""

    id: uuid.UUID
    owner_id: uuid.UUID
    prediction_id: str | None
    status: str
    mode: str
    room_type: str | None
    style: str | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int
    input_keys: tuple[str, ...]
    source_job_id: uuid.UUID | None
    # Hash of the request that created the job (a reused key must match it).
    request_fingerprint: str
    charge_state: str
    refund_state: str
    # The W3C traceparent of the submission (tracing on only; kit/tracing.py).
    traceparent: str | None = None

    def view(self) -> JobView:
        """The job as clients see it, without its render (see JobReads.view for that)."""
        return JobView(
            id=self.id,
            owner_id=self.owner_id,
            prediction_id=self.prediction_id,
            status=self.status,
            mode=self.mode,
            room_type=self.room_type,
            style=self.style,
            error_code=self.error_code,
            error_message=self.error_message,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
            version=self.version,
            input_keys=self.input_keys,
            source_job_id=self.source_job_id,
        )


@dataclass(frozen=True)
class NewJob:
    """A job to insert; it starts ``starting``, neither charged nor refunded."""

    id: uuid.UUID
    owner_id: uuid.UUID
    idempotency_key: str | None
    request_fingerprint: str
    mode: str
    room_type: str | None
    style: str | None
    prompt: str | None
    # The prompt the model is sent, for support only: never logged nor answered.
    composed_prompt: str
    input_keys: Sequence[str]
    source_job_id: uuid.UUID | None
    source_variant_idx: int | None
    created_at: datetime
    # The submission's W3C traceparent when tracing is on: later spans link to it.
    traceparent: str | None = None


@dataclass(frozen=True)
class Inserted:
    """The job row was written."""


@dataclass(frozen=True)
class KeyTaken:
    """The owner already has a job under this idempotency key."""


@dataclass(frozen=True)
class SlotTaken:
    """The owner already has a job in flight (the one-in-flight guard refused the row)."""


InsertOutcome = Inserted | KeyTaken | SlotTaken


@dataclass(frozen=True)
class TerminalUpdate:
    """The outcome of ending a job: whether it changed and whether a refund is due."""

    changed: bool
    refund_due: bool


@dataclass(frozen=True)
class ChargeUpdate:
    """The outcome of recording a debit: the job as written (None when it was already
    recorded) and whether the job had ended meanwhile, so its refund is due now."""

    job: Job | None
    refund_due: bool


@dataclass(frozen=True)
class StoredVariant:
    """A stored variant, where it is (for the thumbnail backfill)."""

    render_id: uuid.UUID
    idx: int
    object_key: str
    job_id: uuid.UUID


@dataclass(frozen=True)
class PendingFiles:
    """A job whose render files (if any) are to be removed from storage.

    ``files_round`` is read before the files are listed: marking them removed
    succeeds only if no late writer stored files since (it bumps the round).
    """

    job_id: uuid.UUID
    owner_id: uuid.UUID
    files_round: int
