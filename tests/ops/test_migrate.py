"""``python -m generation migrate`` / ``python -m usage migrate`` against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from launcher.components import free_port
from tests.ops.support import run_service

OWNED_TABLES = {
    "generation": {"alembic_version_generation", "generation_jobs", "renders", "job_events"},
    "usage": {"alembic_version_usage", "profiles", "usage_ledger"},
}


async def _tables_and_head(url: str, service: str) -> tuple[set[str], list[str]]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        table = f"alembic_version_{service}"  # one of two fixed names, not input
        heads = await connection.fetch(f"SELECT version_num FROM {table}")  # noqa: S608
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}, [row["version_num"] for row in heads]


@pytest.mark.parametrize("service", ["generation", "usage"])
async def test_migrate_brings_a_fresh_database_to_head_and_is_idempotent(
    service: str, database_factory: Callable[[str], str]
) -> None:
    url = database_factory(f"ops_migrate_{service}")
    # Only the URL: the one-shot step and the init container get no other variable.
    env = {f"{service.upper()}_DATABASE_URL": url}

    first = run_service(service, "migrate", env=env)
    tables, head = await _tables_and_head(url, service)
    second = run_service(service, "migrate", env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert '"event": "migrate.at_head"' in first.stdout
    assert OWNED_TABLES[service] <= tables
    assert len(head) == 1
    assert await _tables_and_head(url, service) == (tables, head)


def test_migrate_falls_back_to_database_url(database_factory: Callable[[str], str]) -> None:
    url = database_factory("ops_migrate_fallback")

    result = run_service("usage", "migrate", env={"DATABASE_URL": url})

    assert result.returncode == 0, result.stderr


def test_an_unreachable_database_fails_without_printing_the_password() -> None:
    url = f"postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:{free_port()}/nowhere"

    result = run_service("generation", "migrate", env={"GENERATION_DATABASE_URL": url})

    assert result.returncode == 1
    assert '"event": "migrate.failed"' in result.stdout
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_no_database_url_is_a_usage_error_naming_the_variable() -> None:
    result = run_service("usage", "migrate", env={})

    assert result.returncode == 2
    assert "USAGE_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_command_is_refused_with_the_usage_line() -> None:
    result = run_service("generation", "migrat", env={})

    assert result.returncode == 2
    assert "python -m generation" in result.stderr


def _backfill_env(database_url: str) -> dict[str, str]:
    """A development environment whose storage is nowhere."""
    return {
        "APP_ENV": "development",
        "GENERATION_DATABASE_URL": database_url,
        "S3_ENDPOINT": f"127.0.0.1:{free_port()}",
        "S3_ACCESS_KEY": "a",
        "S3_SECRET_KEY": "b",
    }


def test_the_backfill_with_its_database_down_says_so_without_a_traceback() -> None:
    url = f"postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:{free_port()}/nowhere"

    result = run_service("generation.backfill", env=_backfill_env(url))

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-800:]
    assert '"event": "backfill.failed"' in output
    assert "Traceback" not in output
    assert "s3cret-pw" not in output


async def test_the_backfill_never_migrates(database_factory: Callable[[str], str]) -> None:
    """An operator's shell has RUN_MIGRATIONS unset (true): the schema is the migrate
    step's to change, not a side effect of a backfill."""
    url = database_factory("ops_backfill_no_migrate")

    result = run_service("generation.backfill", env=_backfill_env(url))

    tables = await _tables(url)
    assert result.returncode == 1  # nothing to work on: no schema, no storage
    assert "Traceback" not in result.stdout + result.stderr
    assert tables == set()


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}
