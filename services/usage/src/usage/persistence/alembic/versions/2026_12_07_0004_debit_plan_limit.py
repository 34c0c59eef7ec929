"""debit plan limit: each debit records the monthly limit it was checked against

Revision ID: 20261207_0004
Revises: 20261207_0003
Create Date: 2026-12-07 17:10:00.000000

The ledger audit's OVER_PLAN judged every month by the plan the owner is on at audit
time: a busy month followed by a downgrade, or a downgrade below what was used
mid-month (both legitimate: usage never goes back), read as over the plan for good,
and a month overspent under a small plan looked clean after an upgrade. The service
keeps no history of plans, so ``usage_debit`` now writes the limit it checked into its
debit (``plan_limit``), and the audit replays each month against the limits its debits
were held to. Earlier debits carry none: they are judged by today's plan, as before.
A nullable column (no table rewrite).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from usage.persistence.function_rewrite import rewrite_debit

revision: str = "20261207_0004"
down_revision: str | None = "20261207_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The function's text as 20261204_0001 wrote it (no later revision changed the insert).
_INSERT = (
    "INSERT INTO usage_ledger (owner_id, kind, amount, job_id, idempotency_key, reason,\n"
    "                                  created_at)\n"
    "        VALUES (p_owner, 'debit', p_amount, p_job, p_key, p_reason, p_at)"
)
_INSERT_WITH_LIMIT = (
    "INSERT INTO usage_ledger (owner_id, kind, amount, job_id, idempotency_key, reason,\n"
    "                                  created_at, plan_limit)\n"
    "        VALUES (p_owner, 'debit', p_amount, p_job, p_key, p_reason, p_at,\n"
    "                COALESCE(p_limits[array_position(p_price_ids, price_id)], p_free_limit))"
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("usage_ledger", sa.Column("plan_limit", sa.Integer(), nullable=True))
    rewrite_debit(_INSERT, _INSERT_WITH_LIMIT)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    rewrite_debit(_INSERT_WITH_LIMIT, _INSERT)
    op.drop_column("usage_ledger", "plan_limit")
