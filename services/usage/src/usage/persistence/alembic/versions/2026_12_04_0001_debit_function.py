"""A debit in one statement: usage_debit() locks, checks, appends and answers at once.

Revision ID: 20261204_0001
Revises: 20261122_0001
Create Date: 2026-12-04

A debit used to be six round trips (BEGIN, profile lock, earlier entry, used,
insert, COMMIT). As a function it is one call in autocommit. It must be a function,
not one SQL statement with CTEs: a statement reads from one snapshot taken before it
waits for the profile lock, so it could miss a debit committed while it waited and
overspend. In a VOLATILE plpgsql function each query takes a fresh snapshot, so the
used count is read after the lock, as the transaction did.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "20261204_0001"
down_revision: str | None = "20261122_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# outcome: 'earlier' (an entry with the key, or the job's debit, exists: its columns
# follow), 'refused' (nothing left), 'written', or 'twin' (the insert collided with a
# concurrent entry, found again and returned). used: the period's used count after it.
# The plan's monthly limit is looked up from the arrays the caller passes (its plan
# catalog): a price_id not in them, or NULL, is on the free limit.
_DEBIT_FUNCTION = """
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

# Debits of one owner in [start, end) minus the credits of those same debits: the
# same query as the repository's ``used_in``.
_USED_IN_FUNCTION = """
CREATE OR REPLACE FUNCTION usage_used_in(p_owner uuid, p_start timestamptz, p_end timestamptz)
RETURNS integer LANGUAGE sql VOLATILE AS $$
    SELECT (COALESCE(sum(d.amount), 0) - COALESCE(sum(c.amount), 0))::integer
    FROM usage_ledger d
    LEFT OUTER JOIN usage_ledger c
        ON c.job_id = d.job_id AND c.kind = 'credit' AND c.owner_id = d.owner_id
    WHERE d.owner_id = p_owner AND d.kind = 'debit'
        AND d.created_at >= p_start AND d.created_at < p_end
$$
"""


def upgrade() -> None:
    op.execute(_USED_IN_FUNCTION)
    op.execute(_DEBIT_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS usage_debit(uuid, uuid, text, text, integer, timestamptz, "
        "timestamptz, timestamptz, text[], integer[], integer)"
    )
    op.execute("DROP FUNCTION IF EXISTS usage_used_in(uuid, timestamptz, timestamptz)")
