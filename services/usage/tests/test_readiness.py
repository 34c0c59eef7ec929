"""Health follows the database: usage's named service is SERVING only while it reaches
its database; the overall status (liveness) is the process's."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.components import free_port
from usage.wiring import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _statuses(client: Any) -> tuple[int, int]:
    async with grpc.aio.insecure_channel(client.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        named = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    return overall.status, named.status


async def test_ready_with_its_database(server_factory: Any, usage_db: str, session_clock) -> None:
    async with server_factory(usage_db, session_clock) as client:
        assert await _statuses(client) == (SERVING, SERVING)


async def test_not_ready_without_its_database_but_alive(server_factory: Any, session_clock) -> None:
    unreachable = f"postgresql+asyncpg://usage@127.0.0.1:{free_port()}/usage"
    async with server_factory(unreachable, session_clock) as client:
        assert await _statuses(client) == (SERVING, NOT_SERVING)
