"""A release against a database at another release's schema: later (a rollback, an old
pod replaced during a rolling deploy), behind (its migrate step not run yet), or held
by a long transaction while it migrates. Real PostgreSQL, the services' own commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from generation.wiring import MIGRATIONS as GENERATION_MIGRATIONS
from kit.db import _alembic_config
from launcher.components import free_port
from testkit.plugin import S3Endpoint
from tests.ops.support import run_service
from usage.wiring import MIGRATIONS_DIR as USAGE_MIGRATIONS

LOCATIONS = {"generation": GENERATION_MIGRATIONS, "usage": USAGE_MIGRATIONS}


def _revisions(location: Path) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config(location, "postgresql://unused/x"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


async def _upgrade_to(location: Path, url: str, revision: str) -> None:
    await asyncio.to_thread(command.upgrade, _alembic_config(location, url), revision)


async def _sql(url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


def _env(service: str, url: str) -> dict[str, str]:
    return {f"{service.upper()}_DATABASE_URL": url}


@pytest.mark.parametrize("service", ["generation", "usage"])
async def test_a_database_a_later_release_migrated_is_left_as_it_is(
    service: str, database_factory: Callable[[str], str]
) -> None:
    """The previous release's migrate step (its init container after a rollback) must let
    its pods start on the newer schema they can serve (migrations expand, then contract):
    it refused with "Can't locate revision"."""
    url = database_factory(f"ops_ahead_{service}")
    assert run_service(service, "migrate", env=_env(service, url)).returncode == 0
    table = f"alembic_version_{service}"
    await _sql(url, f"UPDATE {table} SET version_num = '9999_a_later_release'")  # noqa: S608

    again = run_service(service, "migrate", env=_env(service, url))
    checked = run_service(service, "check-schema", env=_env(service, url))

    assert again.returncode == 0, again.stdout + again.stderr
    assert '"event": "migrate.schema_ahead"' in again.stdout
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rows = await _sql(url, f"SELECT version_num FROM {table}")  # noqa: S608
    assert [row[0] for row in rows] == ["9999_a_later_release"]


@pytest.mark.parametrize("service", ["generation", "usage"])
async def test_check_schema_says_behind_until_the_migrations_ran(
    service: str, database_factory: Callable[[str], str]
) -> None:
    url = database_factory(f"ops_behind_{service}")
    revisions = _revisions(LOCATIONS[service])
    await _upgrade_to(LOCATIONS[service], url, revisions[-2])

    behind = run_service(service, "check-schema", env=_env(service, url))
    assert behind.returncode == 3, behind.stdout + behind.stderr
    assert '"event": "migrate.schema_behind"' in behind.stdout
    table = f"alembic_version_{service}"
    rows = await _sql(url, f"SELECT version_num FROM {table}")  # noqa: S608
    assert [row[0] for row in rows] == [revisions[-2]]  # checked, not changed

    assert run_service(service, "migrate", env=_env(service, url)).returncode == 0
    assert run_service(service, "check-schema", env=_env(service, url)).returncode == 0


async def test_a_service_that_does_not_migrate_refuses_a_schema_behind_its_code(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> None:
    """RUN_MIGRATIONS=false (compose, Kubernetes: a one-shot step migrates) on a schema one
    revision behind: it served, health SERVING, while every read of a job failed on the
    missing column. It does not start, and says why."""
    url = database_factory("ops_stale_start")
    await _upgrade_to(GENERATION_MIGRATIONS, url, _revisions(GENERATION_MIGRATIONS)[-2])
    env = {
        **s3_server.env(),
        "GENERATION_DATABASE_URL": url,
        "APP_ENV": "development",
        "RUN_MIGRATIONS": "false",
        "SWEEP_ENABLED": "false",
        "GENERATION_GRPC_PORT": str(free_port()),
        "GENERATION_METRICS_PORT": str(free_port()),
    }

    started = run_service("generation", env=env)

    assert started.returncode == 1, started.stdout + started.stderr
    assert "the database schema is behind this release" in started.stderr


async def test_a_migration_never_queues_live_writes_behind_a_long_transaction(
    database_factory: Callable[[str], str],
) -> None:
    """0008 builds an index (a SHARE lock on generation_jobs) and set no lock timeout of its
    own: behind a long write transaction it waited for ever, and every INSERT of the
    serving release queued behind its lock request. Every migration now runs under one
    lock timeout (5 s): it gives up, the writes go on, and it can be run again."""
    url = database_factory("ops_lock_timeout")
    revisions = _revisions(GENERATION_MIGRATIONS)
    await _upgrade_to(GENERATION_MIGRATIONS, url, revisions[revisions.index("0008") - 1])
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    holder, writer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    insert = (
        "INSERT INTO generation_jobs (id, owner_id, request_fingerprint, mode, status,"
        " created_at, updated_at) VALUES ($1, $2, 'f', 'imagine', 'failed', now(), now())"
    )
    migrating = None
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("UPDATE generation_jobs SET updated_at = now()")  # a write lock
        migrating = subprocess.Popen(
            [sys.executable, "-m", "generation", "migrate"],
            env={**_clean_env(), "GENERATION_DATABASE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await _until_waiting_on_a_lock(url)
        began = time.monotonic()
        await asyncio.wait_for(writer.execute(insert, uuid.uuid4(), uuid.uuid4()), 15)
        assert time.monotonic() - began < 8  # the lock timeout, not the transaction
        out, _ = await asyncio.to_thread(migrating.communicate, timeout=30)
        assert migrating.returncode == 1
        assert '"event": "migrate.failed"' in out
        await transaction.rollback()
    finally:
        await holder.close()
        await writer.close()
        if migrating is not None and migrating.poll() is None:
            migrating.kill()
            migrating.communicate(timeout=30)
    assert run_service("generation", "migrate", env=_env("generation", url)).returncode == 0


async def _until_waiting_on_a_lock(url: str) -> None:
    async with asyncio.timeout(20):
        while not (
            await _sql(
                url,
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE '%generation_jobs%'",
            )
        ):
            await asyncio.sleep(0.1)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}


async def test_check_schema_waits_for_a_migration_under_way_only_so_long(
    database_factory: Callable[[str], str],
) -> None:
    """A server's start runs check-schema; a migration under way holds the advisory lock
    (a long one, or one stuck behind a lock): the check gives up within the lock timeout
    (and the server starts unchecked, not ready until its database is) instead of
    holding every start until a probe kills it."""
    url = database_factory("ops_check_waits")
    assert run_service("generation", "migrate", env=_env("generation", url)).returncode == 0
    holder = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT pg_advisory_xact_lock(7420001)")  # generation's lock
        began = time.monotonic()
        checked = await asyncio.to_thread(
            run_service, "generation", "check-schema", env=_env("generation", url)
        )
        waited = time.monotonic() - began
        await transaction.rollback()
    finally:
        await holder.close()
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert waited < 20
