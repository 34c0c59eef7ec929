"""The image's own scripts, run as the containers run them: healthcheck.py and migrate.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from launcher.components import free_port
from tests.deploy.support import DEPLOY, load_script

HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"
MIGRATE = DEPLOY / "docker" / "migrate.py"


def _run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    """A real gRPC server with only the standard health service."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/ok" else 503
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_check_follows_the_serving_status(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert _run(str(HEALTHCHECK), "grpc", target).returncode == 0

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    down = _run(str(HEALTHCHECK), "grpc", target)
    assert down.returncode == 1
    assert "NOT_SERVING" in down.stderr


def test_grpc_check_fails_when_nothing_listens() -> None:
    result = _run(str(HEALTHCHECK), "grpc", f"127.0.0.1:{free_port()}")

    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_http_check_wants_a_2xx(http_base: str) -> None:
    assert _run(str(HEALTHCHECK), "http", f"{http_base}/ok").returncode == 0
    failed = _run(str(HEALTHCHECK), "http", f"{http_base}/down")
    assert failed.returncode == 1
    assert "HTTP 503" in failed.stderr
    assert _run(str(HEALTHCHECK), "http", f"http://127.0.0.1:{free_port()}/").returncode == 1


@pytest.fixture(scope="module")
def migrate_script() -> ModuleType:
    """deploy/docker/migrate.py loaded in process (for the checks that need no subprocess)."""
    return load_script(MIGRATE)


def _environment_without_databases() -> dict[str, str]:
    names = {"DATABASE_URL", "GENERATION_DATABASE_URL", "USAGE_DATABASE_URL"}
    return {k: v for k, v in os.environ.items() if k not in names}


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


@pytest.mark.parametrize(
    ("service", "owned"),
    [
        ("generation", {"alembic_version_generation", "generation_jobs", "renders"}),
        ("usage", {"alembic_version_usage", "profiles", "usage_ledger"}),
    ],
)
async def test_migrate_brings_the_service_database_to_head(
    service: str, owned: set[str], database_factory: Callable[[str], str]
) -> None:
    url = database_factory(f"migrate_{service}")
    env = {**_environment_without_databases(), f"{service.upper()}_DATABASE_URL": url}

    result = _run(str(MIGRATE), service, env=env)

    assert result.returncode == 0, result.stderr
    assert "is at head" in result.stdout
    assert owned <= await _tables(url)


def test_migrate_reads_database_url_and_never_prints_the_password(
    migrate_script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("USAGE_DATABASE_URL", "GENERATION_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # Nothing listens there: exit 1 (it tried) rather than 2 (no URL), DSN not shown.
    url = f"postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    monkeypatch.setenv("DATABASE_URL", url)

    code = migrate_script.main(["usage"])

    output = capsys.readouterr()
    assert code == 1
    assert "usage failed" in output.err
    assert "s3cret-pw" not in output.err + output.out


def test_migrate_refuses_without_a_database_or_with_an_unknown_service() -> None:
    env = _environment_without_databases()

    missing = _run(str(MIGRATE), "generation", env=env)
    unknown = _run(str(MIGRATE), "billing", env={**env, "DATABASE_URL": "postgresql://x/y"})

    assert missing.returncode == 2
    assert "GENERATION_DATABASE_URL or DATABASE_URL" in missing.stderr
    assert unknown.returncode == 2


def test_migrate_uses_the_directories_the_services_migrate_from(
    migrate_script: ModuleType,
) -> None:
    from generation.wiring import MIGRATIONS
    from usage.wiring import MIGRATIONS_DIR

    assert migrate_script.migrations_dir("generation") == MIGRATIONS
    assert migrate_script.migrations_dir("usage") == MIGRATIONS_DIR
