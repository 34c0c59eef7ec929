"""Pools and concurrency are bounded by settings that exist and are actually used.

What is checked, and how:
- edge uploads: MAX_CONCURRENT_SUBMISSIONS bounds submissions in flight (observed
  from a stand-in generation server that holds every call);
- edge public-file reads: the object-storage HTTP pool has STORAGE_POOL_SIZE slots;
- generation: the database pool has DB_POOL_SIZE + DB_MAX_OVERFLOW connections at
  most and waits DB_POOL_TIMEOUT_SECONDS; the provider's HTTP client has a
  connection limit; its object-storage pool is sized.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from edge_api.app import create_app as create_edge_app
from edge_api.clients import STORAGE_POOL_SIZE
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from kit.runtime_config import load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.plugin import S3Endpoint
from testkit.servers import ThreadedUvicorn
from testkit.stack import Stack
from testkit.standins import GenerationBackend, serving_backends
from tests.e2e.harness import make_token

OWNER = uuid.uuid4()
LIMIT = 2
REQUESTS = 5


class HoldingGeneration(GenerationBackend):
    """Holds every submission until released; counts how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0
        self.arrived = asyncio.Event()

    async def SubmitGeneration(self, request_iterator: Any, context: Any) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= LIMIT:
            self.arrived.set()
        try:
            await self.release.wait()
            return await super().SubmitGeneration(request_iterator, context)
        finally:
            self.running -= 1


async def test_the_edge_bounds_submissions_in_flight(s3_server: S3Endpoint) -> None:
    # The servicer stubs mark every RPC abstract; grpc's base class answers UNIMPLEMENTED.
    generation = HoldingGeneration()  # type: ignore[abstract]
    async with serving_backends(generation) as backends:
        target = backends.target
        settings = EdgeSettings.model_validate(
            dict(
                GENERATION_GRPC_TARGET=target,
                USAGE_GRPC_TARGET=target,
                MAX_CONCURRENT_SUBMISSIONS=LIMIT,
                # One owner sends them all: the per-user upload limit must not refuse them,
                # and the ones over LIMIT wait for a slot (longer than the 0.3 s below).
                MAX_UPLOADS_PER_USER=REQUESTS,
                UPLOAD_SLOT_WAIT_SECONDS=30,
                **s3_server.env(),
            )
        )
        app = create_edge_app(settings, load_runtime_config(REPO_RUNTIME_CONFIG))
        with ThreadedUvicorn(app, name="pool-edge") as edge:
            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {make_token(OWNER)}"}, timeout=30
            ) as client:
                body = {"mode": "imagine", "prompt": "A sunny living room"}
                calls = [
                    asyncio.create_task(
                        client.post(f"{edge.base_url}/api/v1/generations", json=body)
                    )
                    for _ in range(REQUESTS)
                ]
                await asyncio.wait_for(generation.arrived.wait(), timeout=10)
                await asyncio.sleep(0.3)  # the others had every chance to get through
                assert generation.running == LIMIT
                generation.release.set()
                responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [202] * REQUESTS
    assert generation.most == LIMIT


def test_the_edge_storage_pool_is_sized(stack: Stack) -> None:
    clients = stack.edge._app.state.edge.clients  # the running edge's own clients
    pool = clients.storage._client._http
    assert pool.connection_pool_kw["maxsize"] == STORAGE_POOL_SIZE


def test_generation_pools_are_bounded_by_its_settings(stack: Stack) -> None:
    settings = GenerationSettings(
        GENERATION_DATABASE_URL="postgresql+asyncpg://x/y", S3_ENDPOINT="x",
        S3_ACCESS_KEY="x", S3_SECRET_KEY="x",
    )  # fmt: skip
    engine = stack.ctx.sessions.kw["bind"]
    assert engine.pool.size() == settings.db_pool_size
    assert engine.pool._max_overflow == settings.db_max_overflow
    assert engine.pool._timeout == settings.db_pool_timeout_seconds
    transport = stack.ctx.provider._client._transport  # type: ignore[attr-defined]
    assert 0 < transport._pool._max_connections <= 100
    assert stack.ctx.storage._client._http.connection_pool_kw["maxsize"] > 0
