"""submission traceparent: the trace a job was submitted in

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:30:00.000000

A nullable text column (no table rewrite, no default): the W3C ``traceparent`` of the
submission when tracing was on, so the webhook's and the sweep's spans can link to
the job's submission trace. Jobs submitted before, or with tracing off, have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("generation_jobs", sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_jobs", "traceparent")
