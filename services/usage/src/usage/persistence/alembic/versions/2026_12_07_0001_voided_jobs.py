"""Jobs settled without a charge: a debit arriving after that is refused.

Revision ID: 20261207_0001
Revises: 20261204_0001
Create Date: 2026-12-07

A credit for a job that has no debit answers ``recorded = false``, and generation
records the job's charge as waived for good. A debit of that job still on its way
(its call cut off after it was sent, its answer lost) could commit afterwards and
stay in the ledger with nothing to give it back. So the credit now records the job
as voided, and ``usage_debit`` answers ``voided`` (writing nothing) for it. Both take
the owner's profile lock first, so one of them comes second and sees the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261207_0001"
down_revision: str | None = "20261204_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 20261204_0001's function, as it was (the downgrade puts it back).
_PREVIOUS_DEBIT_FUNCTION = """
CREATE OR REPLACE FUNCTION usage_debit(
    p_owner uuid, p_job uuid, p_key text, p_reason text, p_amount integer,
    p_at timestamptz, p_start timestamptz, p_end timestamptz,
    p_price_ids text[], p_limits integer[], p_free_limit integer,
    OUT outcome text, OUT price_id text, OUT used integer,
    OUT e_owner uuid, OUT e_kind text, OUT e_amount integer, OUT e_job uuid,
    OUT e_key text, OUT e_reason text, OUT e_created timestamptz
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_entry usage_ledger%ROWTYPE;
    written_id bigint;
BEGIN
    INSERT INTO profiles AS p (owner_id, price_id, created_at, updated_at)
    VALUES (p_owner, NULL, p_at, p_at)
    ON CONFLICT (owner_id) DO UPDATE SET owner_id = EXCLUDED.owner_id
    RETURNING p.price_id INTO price_id;
    SELECT * INTO found_entry FROM usage_ledger l
    WHERE l.idempotency_key = p_key OR (l.job_id = p_job AND l.kind = 'debit')
    ORDER BY (l.idempotency_key = p_key) DESC LIMIT 1;
    IF FOUND THEN
        outcome := 'earlier';
    ELSE
        used := usage_used_in(p_owner, p_start, p_end);
        IF COALESCE(p_limits[array_position(p_price_ids, price_id)], p_free_limit) - used
                < p_amount THEN
            outcome := 'refused';
            RETURN;
        END IF;
        INSERT INTO usage_ledger (owner_id, kind, amount, job_id, idempotency_key, reason,
                                  created_at)
        VALUES (p_owner, 'debit', p_amount, p_job, p_key, p_reason, p_at)
        ON CONFLICT DO NOTHING RETURNING id INTO written_id;
        IF written_id IS NOT NULL THEN
            outcome := 'written';
            used := used + p_amount;
            RETURN;
        END IF;
        -- ON CONFLICT waited for the twin to commit: a fresh snapshot sees it.
        SELECT * INTO found_entry FROM usage_ledger l
        WHERE l.idempotency_key = p_key OR (l.job_id = p_job AND l.kind = 'debit')
        ORDER BY (l.idempotency_key = p_key) DESC LIMIT 1;
        outcome := 'twin';
    END IF;
    used := usage_used_in(p_owner, p_start, p_end);
    e_owner := found_entry.owner_id;
    e_kind := found_entry.kind;
    e_amount := found_entry.amount;
    e_job := found_entry.job_id;
    e_key := found_entry.idempotency_key;
    e_reason := found_entry.reason;
    e_created := found_entry.created_at;
END;
$$
"""

# The same, with the voided check after the look for an earlier entry.
_DEBIT_FUNCTION = _PREVIOUS_DEBIT_FUNCTION.replace(
    """    IF FOUND THEN
        outcome := 'earlier';
    ELSE""",
    """    IF FOUND THEN
        outcome := 'earlier';
    ELSIF EXISTS (SELECT 1 FROM usage_voided_jobs v WHERE v.job_id = p_job) THEN
        -- Settled without a charge (a credit found no debit): never debited now.
        outcome := 'voided';
    ELSE""",
)
assert _DEBIT_FUNCTION != _PREVIOUS_DEBIT_FUNCTION


def upgrade() -> None:
    op.create_table(
        "usage_voided_jobs",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_usage_voided_jobs")),
    )
    op.execute(_DEBIT_FUNCTION)


def downgrade() -> None:
    op.execute(_PREVIOUS_DEBIT_FUNCTION)
    op.drop_table("usage_voided_jobs")
