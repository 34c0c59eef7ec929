"""The image's own scripts, run as the containers run them: healthcheck.py.

The migration commands (``python -m generation|usage migrate``) are checked in tests/ops.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from launcher.components import free_port
from testkit.servers import ThreadedUvicorn
from tests.deploy.support import DEPLOY

HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"


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


def _answer(request: Request) -> Response:
    return Response(status_code=200 if request.url.path == "/ok" else 503)


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    app = Starlette(routes=[Route("/{rest:path}", _answer)])
    server = ThreadedUvicorn(app, name="healthcheck-target").start()
    try:
        yield server.base_url
    finally:
        server.stop()


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
