"""history cursor key: the secret that signs history page tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 01:40:00.000000

A page token's digest was a plain SHA-256 of its fields and the owner: anyone could
recompute it for a position of their choosing, so a tampered token was not always
refused. It is now an HMAC under a key every instance must share; kept here, in the
database they already share, it needs no setting and no deployment step. The first
instance to start writes a random key (``persistence.cursor_key``), which each reads
once at start. To rotate it, delete the row and restart every instance (until all have,
instances sign with different keys and a page may be refused); tokens then in use are
refused with 400 and clients start from page 1.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "history_cursor_keys",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history_cursor_keys")),
        sa.CheckConstraint("id = 1", name=op.f("ck_history_cursor_keys_one_row")),
    )


def downgrade() -> None:
    op.drop_table("history_cursor_keys")
