"""deleted files removal: what a DELETE still has to remove from storage

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:50:00.000000

Adds the markers the DELETE path and the sweep use to remove a deleted job's
render files (public bucket) and input files (private bucket): nullable columns
and a defaulted integer (no table rewrite on PostgreSQL 11+), and two partial
indexes that hold only the deletions still pending, so they stay tiny.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILES_PENDING = "deleted_at IS NOT NULL AND files_removed_at IS NULL"
_INPUTS_PENDING = "deleted_at IS NOT NULL AND inputs_removed_at IS NULL"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("renders", sa.Column("files_removed_at", sa.DateTime(timezone=True)))
    op.add_column(
        "renders",
        sa.Column("cleanup_round", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("generation_jobs", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    op.add_column("generation_jobs", sa.Column("inputs_removed_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_renders_files_pending",
        "renders",
        ["deleted_at"],
        unique=False,
        postgresql_where=sa.text(_FILES_PENDING),
    )
    op.create_index(
        "ix_generation_jobs_inputs_pending",
        "generation_jobs",
        ["deleted_at"],
        unique=False,
        postgresql_where=sa.text(_INPUTS_PENDING),
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index(
        "ix_generation_jobs_inputs_pending",
        table_name="generation_jobs",
        postgresql_where=sa.text(_INPUTS_PENDING),
    )
    op.drop_index(
        "ix_renders_files_pending", table_name="renders", postgresql_where=sa.text(_FILES_PENDING)
    )
    op.drop_column("generation_jobs", "inputs_removed_at")
    op.drop_column("generation_jobs", "deleted_at")
    op.drop_column("renders", "cleanup_round")
    op.drop_column("renders", "files_removed_at")
