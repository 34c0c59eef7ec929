"""Job statuses, their order, and the read model the service returns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from generation.domain import states
from generation.domain.provider import ProviderStatus
from generation.domain.states import JobStatus

STARTING = JobStatus.STARTING
PROCESSING = JobStatus.PROCESSING
SUCCEEDED = JobStatus.SUCCEEDED
FAILED = JobStatus.FAILED
CANCELED = JobStatus.CANCELED
TERMINAL = frozenset(states.TERMINAL)

# Statuses only move forward: an event whose status ranks at or below the job's is stale.
_RANK: dict[str, int] = {STARTING: 0, PROCESSING: 1, SUCCEEDED: 2, FAILED: 2, CANCELED: 2}

# Stable namespace so every instance derives the same render id from a job id.
_RENDER_NAMESPACE = uuid.UUID("0b6d6f0e-3c55-4d43-9a53-6f1f0c2e6b7a")


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


# Normalized errors a job can end with; messages are safe for users.
PROVIDER_FAILED = JobError("PROVIDER_FAILED", "The image model could not complete this design.")
NO_OUTPUT = JobError("NO_OUTPUT", "The image model returned no image.")
OUTPUT_REFUSED = JobError("OUTPUT_REFUSED", "The image model's result could not be accepted.")
ABORTED = JobError("ABORTED", "The image model did not start in time.")
PROVIDER_CANCELED = JobError("CANCELED", "The generation was canceled.")
USER_CANCELED = JobError("CANCELED", "You canceled this generation.")
TIMED_OUT = JobError("TIMED_OUT", "The generation took too long and was stopped.")
UPSTREAM = JobError("UPSTREAM_ERROR", "The image service is unavailable. Please try again.")
INTERRUPTED = JobError("INTERRUPTED", "The submission was interrupted. Please try again.")
OVER_LIMIT = JobError("LIMIT_EXCEEDED", "You have no generations left this month.")


def log_fields(job: JobRef, status: str | None = None) -> dict[str, str | None]:
    """The fields every log line about a job carries: owner, job, prediction and status.

    ``status`` defaults to the job's own; the prediction id is None until the provider
    accepted the job (the key is always there).
    """
    own = job.status if status is None else status
    return job_fields(job.owner_id, job.id, job.prediction_id, own)


def job_fields(
    owner_id: uuid.UUID, job_id: uuid.UUID, prediction_id: str | None, status: str | None
) -> dict[str, str | None]:
    """:func:`log_fields` of a job known only by its ids (a row maybe not written yet:
    its status None when unknown)."""
    return {
        "ownerId": str(owner_id),
        "jobId": str(job_id),
        "predictionId": prediction_id,
        "status": status,
    }


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def moves_forward(current: str, target: str) -> bool:
    """True when ``target`` is a later status than ``current`` (terminal is final)."""
    return not is_terminal(current) and _RANK[target] > _RANK[current]


def job_status_for(provider_status: ProviderStatus) -> str:
    """The job status a provider status leads to (``aborted`` ends as failed)."""
    return {
        ProviderStatus.STARTING: STARTING,
        ProviderStatus.PROCESSING: PROCESSING,
        ProviderStatus.SUCCEEDED: SUCCEEDED,
        ProviderStatus.FAILED: FAILED,
        ProviderStatus.CANCELED: CANCELED,
        ProviderStatus.ABORTED: FAILED,
    }[provider_status]


def render_id_for(job_id: uuid.UUID) -> uuid.UUID:
    """The render id of a job: derived, so concurrent appliers agree on object keys."""
    return uuid.uuid5(_RENDER_NAMESPACE, str(job_id))


def variant_key(render_id: uuid.UUID, idx: int) -> str:
    """Object key of a variant inside the public bucket."""
    return f"renders/{render_id}/{idx}.jpg"


def thumbnail_key(render_id: uuid.UUID, idx: int) -> str:
    """Object key of a variant's thumbnail (at most 512 px), beside the variant."""
    return f"renders/{render_id}/{idx}.thumb.jpg"


class JobRef(Protocol):
    """What flows that act on a job need of it: a row or a snapshot will do."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def owner_id(self) -> uuid.UUID: ...

    @property
    def prediction_id(self) -> str | None: ...

    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class VariantRef:
    idx: int
    # Key inside the public bucket: renders/<renderId>/<idx>.jpg
    object_key: str
    # renders/<renderId>/<idx>.thumb.jpg and the render's size; None when the output
    # could not be decoded (or was stored before thumbnails: see the backfill).
    thumbnail_key: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class JobView:
    """A job as clients see it: a snapshot of the row plus its visible variants.

    Plain values, no ORM state: a GET builds it straight from one SELECT's rows.
    """

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
    # The change feed's version of the job (see the 0002 migration's triggers).
    version: int
    # Object keys of the job's inputs in the private bucket, in input order.
    input_keys: Sequence[str] = ()
    # Refine: the owner's earlier job whose result became input1.
    source_job_id: uuid.UUID | None = None
    render_id: uuid.UUID | None = None
    variants: tuple[VariantRef, ...] = ()
