"""variant thumbnail version: a thumbnail recorded later is a change of its job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 05:20:00.000000

The thumbnail backfill records a variant's thumbnail (and size) long after its job
succeeded. That changes what GET shows (``thumbnailUrl``, ``width``, ``height``) but
bumped no version, so the change feed said nothing and every edge kept answering
its settled view without the thumbnail. Like a render stored or deleted, a
variant's thumbnail recorded or cleared now gives the job a new version (and with
it a recorded, announced change). Only an UPDATE of those columns does: a success
inserts its variants with the render, whose own trigger already bumps the job once.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
CREATE FUNCTION render_variants_bump_job_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generation_jobs SET version = nextval('job_versions')
        WHERE id = (SELECT job_id FROM renders WHERE id = NEW.render_id);
    RETURN NULL;
END $$;
"""
    )
    op.execute(
        """
CREATE TRIGGER render_variants_bump_job_version
    AFTER UPDATE OF thumbnail_key, width, height ON render_variants
    FOR EACH ROW
    WHEN (ROW(NEW.thumbnail_key, NEW.width, NEW.height)
          IS DISTINCT FROM ROW(OLD.thumbnail_key, OLD.width, OLD.height))
    EXECUTE FUNCTION render_variants_bump_job_version();
"""
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER render_variants_bump_job_version ON render_variants")
    op.execute("DROP FUNCTION render_variants_bump_job_version()")
