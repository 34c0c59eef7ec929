"""cancel requested: a person's cancel is recorded before the provider is asked

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 20:30:00.000000

A cancel asks the provider first (a result that won the race is then applied, not
thrown away) and ends the job after. The provider's ``canceled`` webhook could end
it in between, with the provider's message ("The generation was canceled.") for a
cancel the person made. ``cancel_requested_at`` is written before the provider is
asked; whichever writer then ends the job canceled gives the person's message. A
nullable column (no table rewrite), not a visible change: the job's version stays.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("generation_jobs", sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("generation_jobs", "cancel_requested_at")
