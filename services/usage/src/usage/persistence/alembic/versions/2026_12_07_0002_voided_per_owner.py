"""voided per owner: a credit voids only its own owner's job

Revision ID: 20261207_0002
Revises: 20261207_0001
Create Date: 2026-12-07 02:00:00.000000

A credit that finds no debit records the job as voided, and ``usage_debit`` then
refuses the job's debit. Both looked at the job id alone: a credit naming the wrong
owner (an operator's mistyped Credit) voided the real owner's job, whose debit then
wrote nothing: a free generation, answered without an error. The void is now keyed by
job and owner, and the debit looks for its own owner's.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from usage.persistence.function_rewrite import rewrite_debit

revision: str = "20261207_0002"
down_revision: str | None = "20261207_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ANY_OWNER = "SELECT 1 FROM usage_voided_jobs v WHERE v.job_id = p_job)"
_SAME_OWNER = "SELECT 1 FROM usage_voided_jobs v WHERE v.job_id = p_job AND v.owner_id = p_owner)"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_constraint("pk_usage_voided_jobs", "usage_voided_jobs", type_="primary")
    op.create_primary_key("pk_usage_voided_jobs", "usage_voided_jobs", ["job_id", "owner_id"])
    rewrite_debit(_ANY_OWNER, _SAME_OWNER)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    rewrite_debit(_SAME_OWNER, _ANY_OWNER)
    # One void per job again: the earliest stays.
    op.execute(
        "DELETE FROM usage_voided_jobs a USING usage_voided_jobs b"
        " WHERE a.job_id = b.job_id AND (a.created_at, a.owner_id) > (b.created_at, b.owner_id)"
    )
    op.drop_constraint("pk_usage_voided_jobs", "usage_voided_jobs", type_="primary")
    op.create_primary_key("pk_usage_voided_jobs", "usage_voided_jobs", ["job_id"])
