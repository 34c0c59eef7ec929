"""history indexes; the change feed; composed prompt, refine source, thumbnails

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


# Every visible change of a job (status, prediction, error, completion; its render
# stored or deleted) takes a new version from one sequence, is recorded in job_events
# (to resume from) and announced with NOTIFY job_events '<version> <job> <owner>'.
# Triggers, so that no code path can change a job without the feed seeing it.
_FEED_STATEMENTS = (
    """
CREATE FUNCTION generation_jobs_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version IS DISTINCT FROM OLD.version THEN
        RETURN NEW;  -- bumped on purpose (a render changed)
    END IF;
    IF ROW(NEW.status, NEW.prediction_id, NEW.error_code, NEW.error_message, NEW.completed_at)
       IS DISTINCT FROM
       ROW(OLD.status, OLD.prediction_id, OLD.error_code, OLD.error_message, OLD.completed_at)
    THEN
        NEW.version := nextval('job_versions');
    END IF;
    RETURN NEW;
END $$;
""",
    """
CREATE FUNCTION generation_jobs_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO job_events (version, job_id, owner_id)
            VALUES (NEW.version, NEW.id, NEW.owner_id);
        PERFORM pg_notify('job_events', NEW.version || ' ' || NEW.id || ' ' || NEW.owner_id);
    END IF;
    RETURN NULL;
END $$;
""",
    """
CREATE FUNCTION renders_bump_job_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generation_jobs SET version = nextval('job_versions') WHERE id = NEW.job_id;
    RETURN NULL;
END $$;
""",
    """
CREATE TRIGGER generation_jobs_next_version BEFORE UPDATE ON generation_jobs
    FOR EACH ROW EXECUTE FUNCTION generation_jobs_next_version();
""",
    """
CREATE TRIGGER generation_jobs_announce AFTER INSERT OR UPDATE ON generation_jobs
    FOR EACH ROW EXECUTE FUNCTION generation_jobs_announce();
""",
    """
CREATE TRIGGER renders_bump_job_version AFTER INSERT OR UPDATE OF deleted_at ON renders
    FOR EACH ROW EXECUTE FUNCTION renders_bump_job_version();
""",
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("CREATE SEQUENCE job_versions")
    op.add_column(
        "generation_jobs",
        sa.Column(
            "version",
            sa.BigInteger(),
            server_default=sa.text("nextval('job_versions')"),
            nullable=False,
        ),
    )
    op.create_table(
        "job_events",
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_job_events")),
    )
    op.create_index("ix_job_events_recorded_at", "job_events", ["recorded_at"])
    for statement in _FEED_STATEMENTS:  # asyncpg runs one statement per call
        op.execute(statement)
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
    op.execute("DROP TRIGGER renders_bump_job_version ON renders")
    op.execute("DROP TRIGGER generation_jobs_announce ON generation_jobs")
    op.execute("DROP TRIGGER generation_jobs_next_version ON generation_jobs")
    op.execute("DROP FUNCTION renders_bump_job_version()")
    op.execute("DROP FUNCTION generation_jobs_announce()")
    op.execute("DROP FUNCTION generation_jobs_next_version()")
    op.drop_index("ix_job_events_recorded_at", table_name="job_events")
    op.drop_table("job_events")
    op.drop_column("generation_jobs", "version")
    op.execute("DROP SEQUENCE job_versions")
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
