"""files look again: a render prefix emptied while a late writer could still come

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:00:00.000000

An applier that read a job in flight stores its copy, then claims the files it wrote
if the job ended meanwhile; one that dies in between leaves them. A removal within
that writer's time is therefore not recorded: the prefix is listed once more at
``files_look_again_at``. A nullable column (no table rewrite); the pending-files
index keeps its predicate, since such a job is still pending.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("generation_jobs", sa.Column("files_look_again_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("generation_jobs", "files_look_again_at")
