"""The shared Alembic ``env.py`` body: async, online only, under an advisory lock.

A service's ``env.py`` is two lines: import its metadata and call
:func:`run_env` with it and a lock id.

Every run, under the lock, first reads the revision the database is at:

- one this release does not know is a later release's (a rollback, or an old pod
  replaced during a rolling deploy): nothing is done, and :class:`kit.db.SchemaAhead`
  says so (``migrate`` then exits 0: migrations are backward compatible, expand then
  contract, so the older code serves the newer schema);
- with ``check_only`` (``check-schema``), one behind this release's head raises
  :class:`kit.db.SchemaBehind` and nothing is changed.

All steps run in one transaction with one lock timeout: a migration that needs a lock a
long transaction holds gives up after ``LOCK_TIMEOUT`` (and can be run again) instead of
queueing every live write of the serving release behind its lock request.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from kit.db import SchemaAhead, SchemaBehind

LOCK_TIMEOUT = "5s"


def _stored_revisions(connection: Connection, version_table: str) -> list[str]:
    """The revisions the database is at ([] for a database never migrated)."""
    found = connection.execute(text("SELECT to_regclass(:name)"), {"name": version_table})
    if found.scalar() is None:
        return []
    # The table name is the service's constant, never input.
    rows = connection.execute(text(f"SELECT version_num FROM {version_table}"))  # noqa: S608
    return [row[0] for row in rows]


def _do_run(connection: Connection, metadata: MetaData, lock_id: int, version_table: str) -> None:
    check_only = bool(context.config.attributes.get("check_only"))
    if check_only:
        # A check never waits long for a migration under way (a server's start runs it):
        # it fails, and the server starts unchecked, not ready until its database is.
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    # Serializes concurrent starts; released when the transaction ends.
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    script = ScriptDirectory.from_config(context.config)
    known = {revision.revision for revision in script.walk_revisions()}
    stored = _stored_revisions(connection, version_table)
    ahead = [revision for revision in stored if revision not in known]
    if ahead:
        raise SchemaAhead(ahead[0])
    if check_only:
        heads = sorted(script.get_heads())
        if sorted(stored) != heads:
            raise SchemaBehind(stored, heads)
        return
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
    # A database that does not answer fails the run within seconds (retried by whoever
    # runs it), not asyncpg's default minute.
    engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": 10})
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
