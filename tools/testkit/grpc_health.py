"""Waiting for a gRPC server's health answer, for tests that start services."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

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


SERVING = health_pb2.HealthCheckResponse.SERVING


async def serve_until_sigterm(
    module: str, env: dict[str, str], port: int, service: str, log_path: Path
) -> tuple[int, str]:
    """Run ``python -m module`` until both health checks answer SERVING, then SIGTERM it.

    Returns its exit code and everything it printed (it is killed if it will not stop).
    """

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    process = await asyncio.to_thread(start)
    try:
        target = f"127.0.0.1:{port}"
        assert await health_status(target, "", 30) == SERVING
        assert await health_status(target, service, 5) == SERVING
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, await asyncio.to_thread(log_path.read_text)
