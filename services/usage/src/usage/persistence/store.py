"""The domain's unit of work over SQLAlchemy: one session, one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kit.db import session_scope
from usage.domain.ports import Transactions, UnitOfWork
from usage.persistence.repositories import LedgerRepository, ProfileRepository


class SqlUnitOfWork:
    """The repositories of one transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._profiles = ProfileRepository(session)
        self._ledger = LedgerRepository(session)

    @property
    def profiles(self) -> ProfileRepository:
        return self._profiles

    @property
    def ledger(self) -> LedgerRepository:
        return self._ledger


def sql_transactions(sessions: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens transactions for the domain: commit on success, roll back on error."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[UnitOfWork]:
        async with session_scope(sessions) as session:
            yield SqlUnitOfWork(session)

    opener: Transactions = transaction
    return opener


def sql_reads(readers: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens read-only stores on autocommit sessions (``kit.db.create_read_sessionmaker``)."""

    @asynccontextmanager
    async def reads() -> AsyncIterator[UnitOfWork]:
        async with readers() as session:
            yield SqlUnitOfWork(session)

    opener: Transactions = reads
    return opener


def sql_statements(engine: AsyncEngine) -> Transactions:
    """Stores in autocommit for a write that is one statement, so its own transaction.

    The debit (``usage_debit``) needs no BEGIN and no COMMIT: one round trip.
    """
    sessions = async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )

    @asynccontextmanager
    async def statement() -> AsyncIterator[UnitOfWork]:
        async with sessions() as session:
            yield SqlUnitOfWork(session)

    opener: Transactions = statement
    return opener
