"""What the domain needs from storage and from the generation service.

The persistence layer implements the stores over SQL; the domain only sees
these protocols, so no SQL (and no protobuf) leaks into the rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from usage.domain.model import DebitOutcome, EntryKind, JobFacts, LedgerEntry
from usage.domain.periods import Period


class ProfileStore(Protocol):
    async def lock(self, owner_id: uuid.UUID, at: datetime) -> str | None:
        """Creates the profile if missing, locks it until commit; returns its price_id."""
        ...

    async def price_id(self, owner_id: uuid.UUID) -> str | None:
        """The stored price_id (None without a profile or without a price)."""
        ...

    async def set_price_id(self, owner_id: uuid.UUID, price_id: str | None, at: datetime) -> None:
        """Creates or updates the profile's price_id."""
        ...

    async def all_price_ids(self) -> dict[uuid.UUID, str | None]:
        """Every profile's price_id, for the audit."""
        ...


class EntryStore(Protocol):
    async def find_earlier(
        self, kind: EntryKind, idempotency_key: str, job_id: uuid.UUID
    ) -> LedgerEntry | None:
        """The entry with this key (any kind), else the job's entry of ``kind``."""
        ...

    async def find_by_job(self, kind: EntryKind, job_id: uuid.UUID) -> LedgerEntry | None:
        """The job's debit or credit."""
        ...

    async def insert(self, entry: LedgerEntry) -> bool:
        """Appends ``entry``; False (nothing written) when its key or job already has one."""
        ...

    async def void(self, owner_id: uuid.UUID, job_id: uuid.UUID, at: datetime) -> None:
        """Record the job as settled without a charge: a later debit of it is refused."""
        ...

    async def used_in(self, owner_id: uuid.UUID, period: Period) -> int:
        """Debits in ``period`` minus the credits of those same debits."""
        ...

    async def quota_facts(
        self, owner_id: uuid.UUID, period: Period, pending: frozenset[uuid.UUID] = frozenset()
    ) -> tuple[str | None, int]:
        """The profile's price_id and ``used_in(period)`` plus those of ``pending`` the
        ledger holds no debit of and has not voided, in one round trip."""
        ...

    async def debit(
        self, entry: LedgerEntry, period: Period, limits: Mapping[str, int], free_limit: int
    ) -> DebitOutcome:
        """One statement: lock the profile, find an earlier entry, check, append."""
        ...

    async def all_entries(self) -> list[LedgerEntry]:
        """The whole ledger, oldest first, for the audit."""
        ...


class UnitOfWork(Protocol):
    """One transaction's stores."""

    @property
    def profiles(self) -> ProfileStore: ...

    @property
    def ledger(self) -> EntryStore: ...


# Opens one transaction: commits when the block succeeds, rolls back when it raises.
# The read-only opener (``reads``) gives stores that must only be read, in autocommit.
Transactions = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


class JobOutcomeSource(Protocol):
    async def list_all(self) -> Sequence[JobFacts]:
        """Every generation job with its charge-relevant facts."""
        ...
