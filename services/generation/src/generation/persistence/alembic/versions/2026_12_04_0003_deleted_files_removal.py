"""deleted files removal: what is still to remove from storage, per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 16:50:00.000000

Adds the markers the DELETE path, the appliers and the sweep use to remove a
job's render files (public bucket) and a deleted job's inputs (private bucket):
nullable columns and a defaulted integer (no table rewrite on PostgreSQL 11+),
and two partial indexes that hold only the removals still pending, so they stay
tiny. The predicates are spelled out here: a migration must not change when the
models do.

Renders deleted before this revision kept their files: their jobs are marked
deleted with files due, so the sweep removes those files and inputs as well (one
UPDATE over the soft-deleted renders, which are few).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INPUTS_PENDING = "deleted_at IS NOT NULL AND inputs_removed_at IS NULL"
_FILES_PENDING = "files_due_at IS NOT NULL AND files_removed_at IS NULL"
_TIMESTAMPS = ("deleted_at", "inputs_removed_at", "files_due_at", "files_removed_at")


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for name in _TIMESTAMPS:
        op.add_column("generation_jobs", sa.Column(name, sa.DateTime(timezone=True)))
    op.add_column(
        "generation_jobs",
        sa.Column("files_round", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index(
        "ix_generation_jobs_inputs_pending",
        "generation_jobs",
        ["deleted_at"],
        unique=False,
        postgresql_where=sa.text(_INPUTS_PENDING),
    )
    op.create_index(
        "ix_generation_jobs_files_pending",
        "generation_jobs",
        ["files_due_at"],
        unique=False,
        postgresql_where=sa.text(_FILES_PENDING),
    )
    op.execute(
        "UPDATE generation_jobs AS j SET deleted_at = r.deleted_at, files_due_at = r.deleted_at"
        " FROM renders AS r WHERE r.job_id = j.id AND r.deleted_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index(
        "ix_generation_jobs_files_pending",
        table_name="generation_jobs",
        postgresql_where=sa.text(_FILES_PENDING),
    )
    op.drop_index(
        "ix_generation_jobs_inputs_pending",
        table_name="generation_jobs",
        postgresql_where=sa.text(_INPUTS_PENDING),
    )
    op.drop_column("generation_jobs", "files_round")
    for name in reversed(_TIMESTAMPS):
        op.drop_column("generation_jobs", name)
