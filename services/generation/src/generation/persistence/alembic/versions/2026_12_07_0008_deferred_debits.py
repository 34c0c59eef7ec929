"""deferred debits: an index for admission to count an owner's

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:00:00.000000

A succeeded job whose debit could not be recorded (the usage service was unreachable)
is charged later by the sweep; until then the usage service does not count it, so
admission counts these jobs itself. The partial index holds only them (a handful at
most, usually none). Migrations run in one transaction under the start's advisory
lock, so it is not built CONCURRENTLY: the build scans the table once while writes
wait (a fraction of a second per 100k jobs).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFERRED = "status = 'succeeded' AND charge_state = 'none' AND prediction_id IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_generation_jobs_debit_deferred",
        "generation_jobs",
        ["owner_id"],
        unique=False,
        postgresql_where=sa.text(_DEFERRED),
    )


def downgrade() -> None:
    op.drop_index("ix_generation_jobs_debit_deferred", table_name="generation_jobs")
