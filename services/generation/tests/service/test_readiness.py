"""Health follows the database: generation's named service is SERVING only while it
reaches its database; the overall status (liveness) is the process's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from grpc_health.v1 import health_pb2, health_pb2_grpc

from generation.settings import GenerationSettings
from generation.wiring import SERVICE_NAME, build_app
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_client import create_channel
from launcher.components import free_port
from testkit.plugin import S3Endpoint

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _statuses(
    database_url: str, s3_server: S3Endpoint, *, follow: bool = False, **env: Any
) -> tuple[int, int]:
    """(overall, named) health of a generation on ``database_url``; with ``follow``, its
    change feed must answer a WatchJobs call with the caught-up mark first."""
    settings = GenerationSettings(
        GENERATION_DATABASE_URL=database_url,
        SWEEP_ENABLED=False,
        # cast: pydantic types each field; the S3 env names are all strings.
        **cast(dict[str, Any], {**s3_server.env(), **env}),
    )
    app = await build_app(settings, port=0)
    port = await app.server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        named = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        if follow:
            call = generation_pb2_grpc.GenerationServiceStub(channel).WatchJobs(
                pb.WatchJobsRequest(), timeout=10
            )
            first = await anext(aiter(call))
            call.cancel()
            assert first.WhichOneof("item") == "caught_up"
        return overall.status, named.status
    finally:
        await channel.close()
        await app.server.stop(0)


async def test_ready_with_its_database(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> None:
    statuses = await _statuses(database_factory("gen_ready"), s3_server)
    assert statuses == (SERVING, SERVING)


async def test_a_deployed_urls_query_reaches_every_connection(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> None:
    """Deployed URLs end in ``?ssl=verify-full``: the pool, the readiness probe and the
    change feed's LISTEN connection must all read it as the engine does (a direct
    connection that passed it on as a server setting was refused). ``ssl=disable`` here:
    the test server has no TLS."""
    url = f"{database_factory('gen_ready_query')}?ssl=disable"
    statuses = await _statuses(url, s3_server, follow=True)
    assert statuses == (SERVING, SERVING)


async def test_not_ready_without_its_database_but_alive(s3_server: S3Endpoint) -> None:
    unreachable = f"postgresql+asyncpg://generation@127.0.0.1:{free_port()}/generation"
    statuses = await _statuses(unreachable, s3_server, RUN_MIGRATIONS="false")
    assert statuses == (SERVING, NOT_SERVING)
