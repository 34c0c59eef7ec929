"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:14:01.298694
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "generation_jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("room_type", sa.String(length=64), nullable=True),
        sa.Column("style", sa.String(length=64), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column(
            "input_keys",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("prediction_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("charge_state", sa.String(length=8), server_default="none", nullable=False),
        sa.Column("refund_state", sa.String(length=8), server_default="none", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "charge_state IN ('none', 'charged', 'waived')",
            name=op.f("ck_generation_jobs_charge_state_known"),
        ),
        sa.CheckConstraint(
            "refund_state IN ('none', 'pending', 'done')",
            name=op.f("ck_generation_jobs_refund_state_known"),
        ),
        sa.CheckConstraint(
            "status IN ('starting', 'processing', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_generation_jobs_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_jobs")),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_generation_jobs_owner_key"),
        sa.UniqueConstraint("prediction_id", name="uq_generation_jobs_prediction_id"),
    )
    op.create_index(
        "ix_generation_jobs_inflight_updated",
        "generation_jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('starting', 'processing')"),
    )
    op.create_index(
        "ix_generation_jobs_owner_created",
        "generation_jobs",
        ["owner_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_generation_jobs_refund_pending",
        "generation_jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("refund_state = 'pending'"),
    )
    op.create_index(
        "uq_generation_jobs_one_inflight_per_owner",
        "generation_jobs",
        ["owner_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('starting', 'processing')"),
    )
    op.create_table(
        "renders",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("room_type", sa.String(length=64), nullable=True),
        sa.Column("style", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["generation_jobs.id"],
            name=op.f("fk_renders_job_id_generation_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_renders")),
        sa.UniqueConstraint("job_id", name="uq_renders_job_id"),
    )
    op.create_index("ix_renders_owner_created", "renders", ["owner_id", "created_at"], unique=False)
    op.create_table(
        "render_variants",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("render_id", sa.UUID(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("idx >= 0", name=op.f("ck_render_variants_idx_non_negative")),
        sa.ForeignKeyConstraint(
            ["render_id"],
            ["renders.id"],
            name=op.f("fk_render_variants_render_id_renders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_render_variants")),
        sa.UniqueConstraint("render_id", "idx", name="uq_render_variants_render_idx"),
    )


def downgrade() -> None:
    op.drop_table("render_variants")
    op.drop_index("ix_renders_owner_created", table_name="renders")
    op.drop_table("renders")
    op.drop_index(
        "uq_generation_jobs_one_inflight_per_owner",
        table_name="generation_jobs",
        postgresql_where=sa.text("status IN ('starting', 'processing')"),
    )
    op.drop_index(
        "ix_generation_jobs_refund_pending",
        table_name="generation_jobs",
        postgresql_where=sa.text("refund_state = 'pending'"),
    )
    op.drop_index("ix_generation_jobs_owner_created", table_name="generation_jobs")
    op.drop_index(
        "ix_generation_jobs_inflight_updated",
        table_name="generation_jobs",
        postgresql_where=sa.text("status IN ('starting', 'processing')"),
    )
    op.drop_table("generation_jobs")
