"""no unused sequences: job_events.version and history_cursor_keys.id take given values

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 23:00:00.000000

Both tables were created with a lone integer primary key, which SQLAlchemy's DDL
turns into a serial: a sequence and a ``nextval`` default that nothing uses (the
feed's trigger writes each job's own version into ``job_events``, and the cursor key
is always row 1). The models say so (``autoincrement=False``); the database now
agrees, so a forgotten value fails at once instead of drawing a number that means
nothing, and the models' drift test can compare server defaults. Dropping a default
and its owned sequence is a catalog change: no rewrite, no scan.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SERIALS = (
    ("job_events", "version", "job_events_version_seq", "bigint"),
    ("history_cursor_keys", "id", "history_cursor_keys_id_seq", "smallint"),
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for table, column, sequence, _ in _SERIALS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT")
        op.execute(f"DROP SEQUENCE IF EXISTS {sequence}")


def downgrade() -> None:
    for table, column, sequence, kind in _SERIALS:
        op.execute(f"CREATE SEQUENCE {sequence} AS {kind} OWNED BY {table}.{column}")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT nextval('{sequence}')")
