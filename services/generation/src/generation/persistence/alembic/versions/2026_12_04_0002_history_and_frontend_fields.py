"""history indexes; composed prompt, refine source, thumbnails and sizes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # Keyset pages of one owner's history, newest first, with and without a status filter.
    op.create_index(
        "ix_generation_jobs_owner_history",
        "generation_jobs",
        ["owner_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_generation_jobs_owner_status_history",
        "generation_jobs",
        ["owner_id", "status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    # The history index serves every query the old one did.
    op.drop_index("ix_generation_jobs_owner_created", table_name="generation_jobs")
    # What the model was sent (for support; never logged nor answered).
    op.add_column("generation_jobs", sa.Column("composed_prompt", sa.Text(), nullable=True))
    # Refine: the earlier job and variant that became input1.
    op.add_column("generation_jobs", sa.Column("source_job_id", sa.UUID(), nullable=True))
    op.add_column("generation_jobs", sa.Column("source_variant_idx", sa.Integer(), nullable=True))
    # Thumbnails and the stored image's size.
    op.add_column(
        "render_variants", sa.Column("thumbnail_key", sa.String(length=200), nullable=True)
    )
    op.add_column("render_variants", sa.Column("width", sa.Integer(), nullable=True))
    op.add_column("render_variants", sa.Column("height", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("render_variants", "height")
    op.drop_column("render_variants", "width")
    op.drop_column("render_variants", "thumbnail_key")
    op.drop_column("generation_jobs", "source_variant_idx")
    op.drop_column("generation_jobs", "source_job_id")
    op.drop_column("generation_jobs", "composed_prompt")
    op.create_index(
        "ix_generation_jobs_owner_created", "generation_jobs", ["owner_id", "created_at"]
    )
    op.drop_index("ix_generation_jobs_owner_status_history", table_name="generation_jobs")
    op.drop_index("ix_generation_jobs_owner_history", table_name="generation_jobs")
