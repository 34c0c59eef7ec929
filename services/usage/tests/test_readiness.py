"""Health follows the database: usage's named service is SERVING only while it reaches
its database; the overall status (liveness) is the process's."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kit.grpc_server import READINESS_INTERVAL_SECONDS
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


async def test_a_pool_busy_with_requests_is_not_a_database_out_of_reach(
    server_factory: Any, usage_db: str, session_clock
) -> None:
    """The check has a connection of its own: with the service's only pooled connection
    held by a request (it waits on a lock), usage stays ready."""
    dsn = usage_db.replace("postgresql+asyncpg://", "postgresql://", 1)
    locker = await asyncpg.connect(dsn)
    pool = {"DB_POOL_SIZE": 1, "DB_MAX_OVERFLOW": 0}
    try:
        async with server_factory(usage_db, session_clock, **pool) as client:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE")
            waiting = asyncio.ensure_future(client.quota(str(uuid.uuid4())))
            try:
                # Past a whole check interval and its time limit.
                deadline = time.monotonic() + READINESS_INTERVAL_SECONDS * 1.6
                while time.monotonic() < deadline:
                    assert await _statuses(client) == (SERVING, SERVING)
                    await asyncio.sleep(0.25)
                assert not waiting.done()  # the request held the pool all along
            finally:
                await transaction.rollback()
            await waiting
    finally:
        await locker.close()
