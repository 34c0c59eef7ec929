"""ORM models of the usage tables, named by the project's naming convention.

The migrations are the source of truth for the schema; these models mirror
them (``alembic check`` compares the two).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import naming_metadata

metadata = naming_metadata()


class Base(DeclarativeBase):
    metadata = metadata


class ProfileRow(Base):
    """A user's billing profile: the plan's ``price_id`` (NULL = free)."""

    __tablename__ = "profiles"

    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    price_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class LedgerRow(Base):
    """One append-only ledger entry: a debit or a credit of one job."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        CheckConstraint("kind IN ('debit', 'credit')", name="kind"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "char_length(idempotency_key) BETWEEN 1 AND 200", name="idempotency_key_length"
        ),
        UniqueConstraint("idempotency_key"),
        Index(
            "ux_usage_ledger_debit_job_id",
            "job_id",
            unique=True,
            postgresql_where=text("kind = 'debit'"),
        ),
        Index(
            "ux_usage_ledger_credit_job_id",
            "job_id",
            unique=True,
            postgresql_where=text("kind = 'credit'"),
        ),
        Index("ix_usage_ledger_owner_id_created_at", "owner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    idempotency_key: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # A debit's monthly limit as usage_debit checked it (the audit's OVER_PLAN replays
    # each month against these); None on credits and on debits before 20261207_0004.
    plan_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class VoidedJobRow(Base):
    """A job settled without a charge (a credit found no debit): never debited after."""

    __tablename__ = "usage_voided_jobs"

    # Per owner: a credit naming another owner voids nothing of the job's own owner.
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
