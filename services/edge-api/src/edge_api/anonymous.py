"""Anonymous users under ``AUTH_ANONYMOUS_USERS=zero_plan``: a plan of zero generations.

Kept at the edge on purpose: such a caller has no profile in the usage service and
must never reach the generation service, so the edge answers for them itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edge_api.schemas import QuotaOut
from kit.timefmt import iso_utc

ANONYMOUS_PLAN = "anonymous"


def zero_plan(now: datetime | None = None) -> QuotaOut:
    """The quota shown to an anonymous user: nothing this (UTC calendar) month."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return QuotaOut(
        plan=ANONYMOUS_PLAN,
        monthly_generations=0,
        used=0,
        remaining=0,
        period_start=iso_utc(start),
        period_end=iso_utc(end),
    )
