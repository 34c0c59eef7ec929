"""The other collaborators the domain needs, as protocols (no transport here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class QuotaSnapshot:
    remaining: int
    period_end: datetime


class UsageGateway(Protocol):
    """The usage service, as the generation flows use it."""

    async def quota(self, owner_id: uuid.UUID) -> QuotaSnapshot:
        """Remaining generations this period (raises UpstreamError when unreachable)."""
        ...

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Charge one generation for the job; idempotent per job.

        Raises kit.errors.LimitExceeded when nothing is left, UpstreamError when
        the usage service cannot be reached.
        """
        ...

    async def credit(self, owner_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> None:
        """Give the job's generation back; idempotent per job."""
        ...
