"""Create profiles and the append-only usage_ledger with all their constraints.

Revision ID: 20261122_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261122_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ledger is append-only: a row, once written, is never changed or removed.
_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION usage_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'usage_ledger is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$
"""


def upgrade() -> None:
    # Fail fast instead of queueing behind live traffic.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "profiles",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("price_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_profiles")),
    )
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
        sa.CheckConstraint("kind IN ('debit', 'credit')", name=op.f("ck_usage_ledger_kind")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_usage_ledger_amount_positive")),
        sa.CheckConstraint(
            "char_length(idempotency_key) BETWEEN 1 AND 200",
            name=op.f("ck_usage_ledger_idempotency_key_length"),
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_usage_ledger_idempotency_key")),
    )
    op.create_index(
        op.f("ux_usage_ledger_debit_job_id"),
        "usage_ledger",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'debit'"),
    )
    op.create_index(
        op.f("ux_usage_ledger_credit_job_id"),
        "usage_ledger",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'credit'"),
    )
    op.create_index(
        op.f("ix_usage_ledger_owner_id_created_at"), "usage_ledger", ["owner_id", "created_at"]
    )
    op.execute(_APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER usage_ledger_append_only BEFORE UPDATE OR DELETE ON usage_ledger "
        "FOR EACH ROW EXECUTE FUNCTION usage_ledger_append_only()"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_table("usage_ledger")
    op.execute("DROP FUNCTION IF EXISTS usage_ledger_append_only()")
    op.drop_table("profiles")
