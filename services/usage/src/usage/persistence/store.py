"""The domain's unit of work over SQLAlchemy: one session, one transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kit.db import create_read_sessionmaker, store_opener
from usage.domain.ports import Transactions
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
    return store_opener(sessions, SqlUnitOfWork, transaction=True)


def sql_reads(readers: async_sessionmaker[AsyncSession]) -> Transactions:
    """Opens read-only stores on autocommit sessions (``kit.db.create_read_sessionmaker``)."""
    return store_opener(readers, SqlUnitOfWork, transaction=False)


def sql_statements(engine: AsyncEngine) -> Transactions:
    """Stores in autocommit for a write that is one statement, so its own transaction.

    The debit (``usage_debit``) needs no BEGIN and no COMMIT: one round trip.
    """
    return store_opener(create_read_sessionmaker(engine), SqlUnitOfWork, transaction=False)
