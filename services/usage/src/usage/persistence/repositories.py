"""All SQL of the usage service. Repositories are built from a session and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from usage.domain.model import DebitOutcome, EntryKind, LedgerEntry
from usage.domain.periods import Period
from usage.persistence.models import LedgerRow, ProfileRow, VoidedJobRow

_ENTRY_COLUMNS = (
    LedgerRow.id,
    LedgerRow.owner_id,
    LedgerRow.kind,
    LedgerRow.amount,
    LedgerRow.job_id,
    LedgerRow.idempotency_key,
    LedgerRow.reason,
    LedgerRow.created_at,
    LedgerRow.plan_limit,
)


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        owner_id=row.owner_id,
        kind=EntryKind(row.kind),
        amount=row.amount,
        job_id=row.job_id,
        idempotency_key=row.idempotency_key,
        reason=row.reason,
        created_at=row.created_at,
        plan_limit=row.plan_limit,
        sequence=row.id,
    )


def _used_in_statement() -> Select[int]:
    """Debits of one owner in [start, end) minus the credits of those same debits.

    Built once: aliasing the mapped class on every call cost more CPU than the query.
    """
    debit = aliased(LedgerRow)
    credit = aliased(LedgerRow)
    return (
        select(func.coalesce(func.sum(debit.amount), 0) - func.coalesce(func.sum(credit.amount), 0))
        .select_from(debit)
        .outerjoin(
            credit,
            and_(
                credit.job_id == debit.job_id,
                credit.kind == EntryKind.CREDIT.value,
                credit.owner_id == debit.owner_id,
            ),
        )
        .where(
            debit.owner_id == bindparam("owner_id"),
            debit.kind == EntryKind.DEBIT.value,
            debit.created_at >= bindparam("start"),
            debit.created_at < bindparam("end"),
        )
    )


_USED_IN = _used_in_statement()

# The function of migrations 20261204_0001 and 20261207_0001 (voided jobs): the whole
# debit in one round trip.
_DEBIT = text(
    "SELECT * FROM usage_debit(:owner, :job, :key, :reason, :amount, :at, :start, :end, "
    "CAST(:price_ids AS text[]), CAST(:limits AS integer[]), :free_limit)"
)

# A quota's two facts in one round trip, from one snapshot.
_PRICE_ID = "(SELECT price_id FROM profiles WHERE owner_id = :owner) AS price_id"
_USED = "usage_used_in(:owner, :start, :end)"
_QUOTA_FACTS = text(f"SELECT {_PRICE_ID}, {_USED} AS used")
# A pending job counts unless the ledger holds its debit (of any period: one recorded
# last month was counted then) or voided it for this owner (it is never debited).
_UNRECORDED_PENDING = (
    "SELECT count(*) FROM unnest(CAST(:jobs AS uuid[])) AS pending(job_id) "
    "WHERE NOT EXISTS (SELECT 1 FROM usage_ledger AS l "
    "WHERE l.job_id = pending.job_id AND l.kind = 'debit') "
    "AND NOT EXISTS (SELECT 1 FROM usage_voided_jobs AS v "
    "WHERE v.job_id = pending.job_id AND v.owner_id = :owner)"
)
_QUOTA_FACTS_WITH_PENDING = text(
    f"SELECT {_PRICE_ID}, {_USED} + ({_UNRECORDED_PENDING})::int AS used"
)


def _debit_outcome(row: Any) -> DebitOutcome:
    entry = None
    if row.e_kind is not None:
        entry = LedgerEntry(
            owner_id=row.e_owner,
            kind=EntryKind(row.e_kind),
            amount=row.e_amount,
            job_id=row.e_job,
            idempotency_key=row.e_key,
            reason=row.e_reason,
            created_at=row.e_created,
        )
    return DebitOutcome(outcome=row.outcome, price_id=row.price_id, used=row.used, entry=entry)


class ProfileRepository:
    """The ``profiles`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock(self, owner_id: uuid.UUID, at: datetime) -> str | None:
        """Creates the profile if missing and locks it until the transaction ends.

        One statement: an upsert whose conflict branch rewrites the row unchanged,
        which takes the row lock (like ``FOR UPDATE``) and returns the price_id.
        """
        statement = insert(ProfileRow).values(
            owner_id=owner_id, price_id=None, created_at=at, updated_at=at
        )
        result = await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[ProfileRow.owner_id],
                set_={"owner_id": statement.excluded.owner_id},
            ).returning(ProfileRow.price_id)
        )
        price_id: str | None = result.scalar_one()
        return price_id

    async def price_id(self, owner_id: uuid.UUID) -> str | None:
        """The stored price_id; None without a profile."""
        result = await self._session.execute(
            select(ProfileRow.price_id).where(ProfileRow.owner_id == owner_id)
        )
        price_id: str | None = result.scalar_one_or_none()
        return price_id

    async def set_price_id(self, owner_id: uuid.UUID, price_id: str | None, at: datetime) -> None:
        """Upserts the profile's price_id."""
        statement = insert(ProfileRow).values(
            owner_id=owner_id, price_id=price_id, created_at=at, updated_at=at
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[ProfileRow.owner_id],
                set_={"price_id": statement.excluded.price_id, "updated_at": func.now()},
            )
        )

    async def all_price_ids(self) -> dict[uuid.UUID, str | None]:
        """Every profile's price_id."""
        result = await self._session.execute(select(ProfileRow.owner_id, ProfileRow.price_id))
        return {row.owner_id: row.price_id for row in result}


class LedgerRepository:
    """The append-only ``usage_ledger`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find_earlier(
        self, kind: EntryKind, idempotency_key: str, job_id: uuid.UUID
    ) -> LedgerEntry | None:
        """The entry with this key, else the job's entry of ``kind``: one round trip."""
        result = await self._session.execute(
            select(*_ENTRY_COLUMNS)
            .where(
                or_(
                    LedgerRow.idempotency_key == idempotency_key,
                    and_(LedgerRow.job_id == job_id, LedgerRow.kind == kind.value),
                )
            )
            .order_by((LedgerRow.idempotency_key == idempotency_key).desc())
            .limit(1)
        )
        row = result.one_or_none()
        return _entry(row) if row is not None else None

    async def find_by_job(self, kind: EntryKind, job_id: uuid.UUID) -> LedgerEntry | None:
        """The job's entry of ``kind`` (at most one, by the partial unique indexes)."""
        result = await self._session.execute(
            select(*_ENTRY_COLUMNS).where(LedgerRow.job_id == job_id, LedgerRow.kind == kind.value)
        )
        row = result.one_or_none()
        return _entry(row) if row is not None else None

    async def insert(self, entry: LedgerEntry) -> bool:
        """Appends ``entry``; False when a unique key (idempotency key, job) already holds one.

        ``ON CONFLICT DO NOTHING`` waits for a concurrent twin to commit and then
        writes nothing, without aborting the transaction.
        """
        result = await self._session.execute(
            insert(LedgerRow)
            .values(
                owner_id=entry.owner_id,
                kind=entry.kind.value,
                amount=entry.amount,
                job_id=entry.job_id,
                idempotency_key=entry.idempotency_key,
                reason=entry.reason,
                created_at=entry.created_at,
            )
            .on_conflict_do_nothing()
            .returning(LedgerRow.id)
        )
        return result.scalar_one_or_none() is not None

    async def void(self, owner_id: uuid.UUID, job_id: uuid.UUID, at: datetime) -> None:
        """Record the job as settled without a charge (``usage_debit`` then refuses it)."""
        await self._session.execute(
            insert(VoidedJobRow)
            .values(job_id=job_id, owner_id=owner_id, created_at=at)
            .on_conflict_do_nothing()
        )

    async def used_in(self, owner_id: uuid.UUID, period: Period) -> int:
        """Debits recorded in ``period`` minus the credits of those debits."""
        result = await self._session.execute(
            _USED_IN, {"owner_id": owner_id, "start": period.start, "end": period.end}
        )
        used: int = result.scalar_one()
        return used

    async def debit(
        self, entry: LedgerEntry, period: Period, limits: Mapping[str, int], free_limit: int
    ) -> DebitOutcome:
        """The whole debit in one statement (``usage_debit``; run it in autocommit).

        ``limits`` maps each paid plan's price_id to its monthly generations; any
        other price_id is on ``free_limit``.
        """
        result = await self._session.execute(
            _DEBIT,
            {
                "owner": entry.owner_id,
                "job": entry.job_id,
                "key": entry.idempotency_key,
                "reason": entry.reason,
                "amount": entry.amount,
                "at": entry.created_at,
                "start": period.start,
                "end": period.end,
                "price_ids": list(limits),
                "limits": list(limits.values()),
                "free_limit": free_limit,
            },
        )
        return _debit_outcome(result.one())

    async def quota_facts(
        self, owner_id: uuid.UUID, period: Period, pending: frozenset[uuid.UUID] = frozenset()
    ) -> tuple[str | None, int]:
        """The profile's price_id (None without one) and ``used_in``, plus the jobs of
        ``pending`` the ledger neither debited nor voided, in one statement."""
        values: dict[str, Any] = {"owner": owner_id, "start": period.start, "end": period.end}
        statement = _QUOTA_FACTS
        if pending:
            statement, values["jobs"] = _QUOTA_FACTS_WITH_PENDING, sorted(pending)
        result = await self._session.execute(statement, values)
        row = result.one()
        return row.price_id, row.used

    async def all_entries(self) -> list[LedgerEntry]:
        """The whole ledger, oldest first."""
        result = await self._session.execute(select(*_ENTRY_COLUMNS).order_by(LedgerRow.id))
        return [_entry(row) for row in result]
