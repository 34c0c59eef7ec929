"""``python -m usage`` as a real process: migrates, serves health, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from launcher.components import free_port
from testkit.grpc_health import SERVING, health_status, serve_until_sigterm
from usage.wiring import SERVICE_NAME


async def test_the_service_starts_serves_and_stops_on_sigterm(
    database_factory: Callable[[str], str], tmp_path: Path
) -> None:
    url, port = database_factory("usage_main"), free_port()
    log_path = tmp_path / "usage.log"
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": url,
        "USAGE_GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    code, output = await serve_until_sigterm("usage", env, port, SERVICE_NAME, log_path)
    assert code == 0, output
    assert '"event": "grpc.stopped"' in output
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version_usage"))
    await engine.dispose()
    assert version == "20261207_0004"


async def test_the_service_refuses_to_start_without_a_database() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}

    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "usage"], env=env, capture_output=True, timeout=30
    )

    assert result.returncode != 0
    assert b"USAGE_DATABASE_URL" in result.stderr or b"DATABASE_URL" in result.stderr


async def test_a_migration_writes_only_json_lines(
    database_factory: Callable[[str], str],
) -> None:
    """Alembic and SQLAlchemy records, on stdout or stderr, are JSON like ours."""
    env = {**os.environ, "USAGE_DATABASE_URL": database_factory("usage_migrate_logs")}

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "usage", "migrate"],
        env=env,
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (result.stdout + result.stderr).decode().splitlines()]
    for line in lines:
        assert {"event", "level", "ts"} <= line.keys(), line
        assert line["service"] == "usage"
    assert "migrate.at_head" in [line["event"] for line in lines]


async def test_a_failed_migration_stops_the_start_with_a_clear_message() -> None:
    # Migrations run in a child process (`python -m usage migrate`); its failure is
    # its own JSON line, and the service exits without serving and without a traceback.
    env = {**os.environ, "USAGE_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:9/none"}

    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "usage"], env=env, capture_output=True, timeout=60
    )

    assert result.returncode == 1
    assert b"usage: not started: the migration ended with exit code 1" in result.stderr
    assert b"Traceback" not in result.stdout + result.stderr
    assert b'"event": "migrate.failed"' in result.stdout


async def test_run_migrations_false_serves_without_migrating(
    database_factory: Callable[[str], str], tmp_path: Path
) -> None:
    # As deployed: a one-shot step (compose) or an init container (Kubernetes) migrated.
    url, port = database_factory("usage_no_migrate"), free_port()
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": url,
        "USAGE_GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "RUN_MIGRATIONS": "false",
    }
    step = subprocess.run(
        [sys.executable, "-m", "usage", "migrate"], env=env, capture_output=True, timeout=120
    )
    assert step.returncode == 0, step.stderr
    code, output = await serve_until_sigterm("usage", env, port, SERVICE_NAME, tmp_path / "u.log")
    assert code == 0, output
    assert "usage.migrated" not in output  # it only checked the schema (check-schema)


async def test_run_migrations_false_refuses_a_database_never_migrated(
    database_factory: Callable[[str], str],
) -> None:
    """The one-shot step has not run: the server does not serve a schema behind its code,
    and says so (it served, and every call failed on a missing table)."""
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": database_factory("usage_not_migrated"),
        "USAGE_GRPC_PORT": str(free_port()),
        "RUN_MIGRATIONS": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "usage"], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 1
    assert b"the database schema is behind this release" in result.stderr
    engine = create_async_engine(env["USAGE_DATABASE_URL"])
    async with engine.connect() as connection:
        table = await connection.scalar(text("SELECT to_regclass('alembic_version_usage')"))
    await engine.dispose()
    assert table is None  # checked, never migrated


async def test_run_migrations_false_starts_alive_while_its_database_is_down(
    tmp_path: Path,
) -> None:
    """A database down at start cannot answer the schema check: the server starts all
    the same, alive and not ready until its database answers (as before the check)."""
    port = free_port()
    env = {
        **os.environ,
        "USAGE_DATABASE_URL": f"postgresql+asyncpg://usage@127.0.0.1:{free_port()}/usage",
        "USAGE_GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "RUN_MIGRATIONS": "false",
    }
    log_path = tmp_path / "down.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "usage"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        target = f"127.0.0.1:{port}"
        assert await health_status(target, "", 30) == SERVING
        assert await health_status(target, SERVICE_NAME, 5) != SERVING
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)
    assert '"event": "migrate.schema_unchecked"' in log_path.read_text()
