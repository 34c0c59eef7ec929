"""The domain's unit of work over SQLAlchemy: one session, one transaction, every store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generation.domain.jobs import JobView
from generation.domain.ports import Transactions
from generation.persistence.removals import RemovalRepository
from generation.persistence.renders import RenderRepository
from generation.persistence.repositories import JobRepository
from generation.persistence.views import load_job_page, load_job_view, load_job_views
from kit.db import store_opener


class SqlJobReads:
    """What clients are shown, read with one or two statements per call."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def view(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> JobView | None:
        """The owner's job with its live render, or None."""
        return await load_job_view(self._session, owner_id, job_id)

    async def views(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobView]:
        """The jobs named, by id, as clients see them (missing ones left out)."""
        return await load_job_views(self._session, job_ids)

    async def page(
        self,
        owner_id: uuid.UUID,
        status: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobView]:
        """One keyset page of the owner's history."""
        return await load_job_page(self._session, owner_id, status, before, limit)


class SqlUnitOfWork:
    """The stores of one session (repositories never commit: the opener does)."""

    def __init__(self, session: AsyncSession) -> None:
        self._jobs = JobRepository(session)
        self._renders = RenderRepository(session)
        self._removals = RemovalRepository(session)
        self._reads = SqlJobReads(session)

    @property
    def jobs(self) -> JobRepository:
        return self._jobs

    @property
    def renders(self) -> RenderRepository:
        return self._renders

    @property
    def removals(self) -> RemovalRepository:
        return self._removals

    @property
    def reads(self) -> SqlJobReads:
        return self._reads


def sql_transactions(sessions: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens transactions for the domain: commit on success, roll back on error."""
    return store_opener(sessions, SqlUnitOfWork, transaction=True)


def sql_reads(readers: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens stores on autocommit sessions (``kit.db.create_read_sessionmaker``): reads only."""
    return store_opener(readers, SqlUnitOfWork, transaction=False)


def sql_statements(readers: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens stores on autocommit sessions for a write that is one statement, so its own
    transaction (the job's insert, attach and charge): one round trip, no BEGIN/COMMIT."""
    return store_opener(readers, SqlUnitOfWork, transaction=False)
