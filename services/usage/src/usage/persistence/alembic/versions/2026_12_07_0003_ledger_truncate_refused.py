"""ledger truncate refused: the append-only ledger cannot be emptied at a stroke either

Revision ID: 20261207_0003
Revises: 20261207_0002
Create Date: 2026-12-07 17:00:00.000000

A row trigger refuses UPDATE and DELETE on ``usage_ledger``, but row triggers do not
fire for TRUNCATE, which removed every entry (every owner's used generations back, the
audit's evidence gone) without a word. A statement trigger with the same function now
refuses it too. An operator who must reset a test database drops the trigger first,
on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "20261207_0003"
down_revision: str | None = "20261207_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        "CREATE TRIGGER usage_ledger_no_truncate BEFORE TRUNCATE ON usage_ledger "
        "FOR EACH STATEMENT EXECUTE FUNCTION usage_ledger_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS usage_ledger_no_truncate ON usage_ledger")
