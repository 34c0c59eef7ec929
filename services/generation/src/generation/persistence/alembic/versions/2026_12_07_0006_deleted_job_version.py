"""deleted job version: deleting a job without a render is a change of it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:40:00.000000

A DELETE sets the job's ``deleted_at``, which changes what GET shows (``inputs``
becomes ``[]``, ``updatedAt`` moves), but ``generation_jobs_next_version`` only
looked at the status, the prediction, the error and the completion. A succeeded
job got its new version from its render's trigger; a failed or canceled one, which
has no render, got none: the change feed said nothing, every edge went on answering
its settled view (with signed links to inputs the DELETE removed), and the DELETE's
reply carried the old version, so even the edge that took it could keep a view read
just before. ``deleted_at`` now counts as a visible change like the others.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION generation_jobs_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version IS DISTINCT FROM OLD.version THEN
        RETURN NEW;  -- bumped on purpose (a render changed)
    END IF;
    IF ROW(NEW.status, NEW.prediction_id, NEW.error_code, NEW.error_message, NEW.completed_at{new})
       IS DISTINCT FROM
       ROW(OLD.status, OLD.prediction_id, OLD.error_code, OLD.error_message, OLD.completed_at{old})
    THEN
        NEW.version := nextval('job_versions');
    END IF;
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(_FUNCTION.format(new=", NEW.deleted_at", old=", OLD.deleted_at"))


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(_FUNCTION.format(new="", old=""))
