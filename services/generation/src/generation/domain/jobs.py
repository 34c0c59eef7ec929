"""Job statuses, their order, and the read model the service returns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from generation.domain.provider import ProviderStatus
from generation.persistence.models import GenerationJob, RenderVariant

STARTING = "starting"
PROCESSING = "processing"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELED = "canceled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})

# Statuses only move forward: an event whose status ranks at or below the job's is stale.
_RANK = {STARTING: 0, PROCESSING: 1, SUCCEEDED: 2, FAILED: 2, CANCELED: 2}

# Stable namespace so every instance derives the same render id from a job id.
_RENDER_NAMESPACE = uuid.UUID("0b6d6f0e-3c55-4d43-9a53-6f1f0c2e6b7a")


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


# Normalized errors a job can end with; messages are safe for users.
PROVIDER_FAILED = JobError("PROVIDER_FAILED", "The image model could not complete this design.")
NO_OUTPUT = JobError("NO_OUTPUT", "The image model returned no image.")
ABORTED = JobError("ABORTED", "The image model did not start in time.")
PROVIDER_CANCELED = JobError("CANCELED", "The generation was canceled.")
USER_CANCELED = JobError("CANCELED", "You canceled this generation.")
TIMED_OUT = JobError("TIMED_OUT", "The generation took too long and was stopped.")
UPSTREAM = JobError("UPSTREAM_ERROR", "The image service is unavailable. Please try again.")
INTERRUPTED = JobError("INTERRUPTED", "The submission was interrupted. Please try again.")
OVER_LIMIT = JobError("LIMIT_EXCEEDED", "You have no generations left this month.")
STORAGE = JobError("STORAGE_ERROR", "The result could not be stored. Please try again.")


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


@dataclass(frozen=True)
class JobView:
    """A job as clients see it: the row plus its visible variants."""

    job: GenerationJob
    render_id: uuid.UUID | None
    variants: Sequence[RenderVariant]
