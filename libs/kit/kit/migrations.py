"""The shared Alembic ``env.py`` body: async, online only, under an advisory lock.

A service's ``env.py`` is two lines: import its metadata and call
:func:`run_env` with it and a lock id.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _do_run(connection: Connection, metadata: MetaData, lock_id: int, version_table: str) -> None:
    # Serializes concurrent starts; released when the transaction ends.
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str, metadata: MetaData, lock_id: int, version_table: str) -> None:
    # As kit.db's engine: no statement parameters in errors or logs.
    engine = create_async_engine(url, hide_parameters=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_do_run, metadata, lock_id, version_table)
    finally:
        await engine.dispose()


def run_env(metadata: MetaData, lock_id: int, version_table: str = "alembic_version") -> None:
    """Run the migrations of the current Alembic context."""
    if context.is_offline_mode():
        raise SystemExit("offline migrations are not supported; run against a database")
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("sqlalchemy.url is not set")
    asyncio.run(_run_async(url, metadata, lock_id, version_table))
