"""charge unsettled: an index for the sweep's settlement query

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:30:00.000000

Every sweep pass (15 s, each instance) asks for jobs whose refund is pending or that
reached the provider without being charged yet. The first half had its partial index;
the second (``charge_state = 'none' AND prediction_id IS NOT NULL``) had none, so the
planner read the whole table each pass: at 300k jobs 56-80 ms and ~100 MB of buffers,
growing with every job ever made, with nothing to settle. This partial index holds only
those jobs (in flight before their debit, or waiting for it: a handful). Migrations run
in one transaction under the start's advisory lock, so it is not built CONCURRENTLY:
the build scans the table once while writes wait (a fraction of a second per 100k
jobs), under the migrations' lock timeout.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNSETTLED = "charge_state = 'none' AND prediction_id IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_generation_jobs_charge_unsettled",
        "generation_jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text(_UNSETTLED),
    )


def downgrade() -> None:
    op.drop_index("ix_generation_jobs_charge_unsettled", table_name="generation_jobs")
