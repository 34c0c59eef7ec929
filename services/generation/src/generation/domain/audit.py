"""Job facts the usage audit checks the ledger against."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from generation.domain.context import GenerationContext
from generation.domain.states import ChargeState, RefundState

MAX_PAGE = 500


@dataclass(frozen=True)
class JobOutcome:
    job_id: uuid.UUID
    owner_id: uuid.UUID
    status: str
    created_at: datetime
    has_output: bool
    charged: bool
    refunded: bool
    waived: bool = False


async def list_job_outcomes(
    ctx: GenerationContext, owner_id: uuid.UUID | None, after: uuid.UUID | None, page_size: int
) -> tuple[list[JobOutcome], uuid.UUID | None]:
    """One page ordered by job id, and the id to continue after (None at the end)."""
    size = max(1, min(page_size or 100, MAX_PAGE))
    async with ctx.transactions() as tx:
        rows = await tx.jobs.audit_page(owner_id, after, size)
        with_output = await tx.renders.outputs_of([row.id for row in rows])
    outcomes = [
        JobOutcome(
            job_id=row.id,
            owner_id=row.owner_id,
            status=row.status,
            created_at=row.created_at,
            has_output=row.id in with_output,
            charged=row.charge_state == ChargeState.CHARGED,
            refunded=row.refund_state == RefundState.DONE,
            waived=row.charge_state == ChargeState.WAIVED,
        )
        for row in rows
    ]
    return outcomes, (rows[-1].id if len(rows) == size else None)
