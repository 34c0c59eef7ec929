"""For migrations that change part of ``usage_debit``: its text as the database has it,
with one passage replaced, so each revision states only what it changes."""

from __future__ import annotations

from alembic import op


def rewrite_debit(old: str, new: str) -> None:
    """``usage_debit`` as it is in the database, with ``old`` replaced by ``new``;
    refuses (RuntimeError) a function that does not hold ``old``."""
    connection = op.get_bind()
    definition = connection.exec_driver_sql(
        "SELECT pg_get_functiondef('usage_debit'::regproc)"
    ).scalar_one()
    if old not in definition:
        raise RuntimeError("usage_debit is not the function this migration expects")
    op.execute(definition.replace(old, new))
