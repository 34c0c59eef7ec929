"""The quota period: the calendar month in UTC.

Every user's month starts at 00:00 UTC on the 1st and ends (exclusive) at
00:00 UTC on the 1st of the next month, whatever their time zone or sign-up
date. One rule for everyone keeps the ledger maths, the audit and the
``periodEnd`` shown to users simple and identical everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kit.errors import InternalError


@dataclass(frozen=True)
class Period:
    """A half-open interval ``[start, end)`` of aware UTC datetimes."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        """True when ``moment`` falls inside the period."""
        return self.start <= moment < self.end

    @property
    def label(self) -> str:
        """``YYYY-MM``, for reports."""
        return f"{self.start.year:04d}-{self.start.month:02d}"


def month_of(moment: datetime) -> Period:
    """The UTC calendar month that contains ``moment`` (which must be aware)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive time would silently shift periods by the host's offset.
        raise InternalError("naive datetime given to the usage period maths")
    utc = moment.astimezone(UTC)
    start = datetime(utc.year, utc.month, 1, tzinfo=UTC)
    end = (
        datetime(utc.year + 1, 1, 1, tzinfo=UTC)
        if utc.month == 12
        else datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)
    )
    return Period(start, end)
