"""Waiting for a gRPC server's health answer, for tests that start services."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def health_status(target: str, service: str, deadline: float) -> int:
    """The first answer of Check(service), retrying until the server is up."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                return int(answer.status)
            except grpc.aio.AioRpcError:
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.1)
