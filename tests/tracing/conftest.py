"""The whole system in one process with tracing on, every span kept in memory.

Tracing wraps process-wide functions (grpc.aio channels and servers, httpx, urllib3),
so this stack is its own: built after :func:`kit.tracing.setup_tracing` (channels and
engines made before it are not traced) and torn down, wrappers removed, before any
other suite's stack could be built with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from generation.wiring import build_app
from kit import tracing
from kit.runtime_config import load_runtime_config
from launcher.components import free_port
from launcher.keys import ensure_key_dir
from replicate_emulator.config import EmulatorConfig
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint
from testkit.providers import emulator_provider
from testkit.servers import MovableClock, ThreadedUvicorn
from testkit.stack import Stack
from tests.e2e.harness import User
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate
from webhook_gateway.app import create_app as create_gateway_app
from webhook_gateway.settings import GatewaySettings


def _identity(keys: Path, name: str, *, serves: bool) -> dict[str, str]:
    env = {"SERVICE_KEY_FILE": str(keys / f"{name}.key")}
    if serves:
        env["SERVICE_TRUST_DIR"] = str(keys / "trust")
    return env


@pytest.fixture(scope="package")
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this package's stack; every finished span lands here."""
    exporter = InMemorySpanExporter()
    active = tracing.setup_tracing("tests", exporter=exporter)
    assert active is not None
    try:
        yield exporter
    finally:
        active.shutdown()


@pytest.fixture(scope="package")
async def traced_stack(
    spans: InMemorySpanExporter,
    database_factory: Callable[[str], str],
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    keys = tmp_path_factory.mktemp("traced-keys")
    ensure_key_dir(keys)
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    clock = MovableClock()
    emulator = EmulatorServer(
        EmulatorConfig(
            port=0,
            start_delay_seconds=0.05,
            run_delay_seconds=0.1,
            webhook_retry_base_seconds=0.05,
            log_level="WARNING",
        )
    )
    emulator.start()
    generation_target = f"127.0.0.1:{free_port()}"
    usage_port = free_port()
    usage_url = database_factory("traced_usage")
    await migrate(usage_url)
    usage_server, _ = build_server(
        UsageSettings.model_validate(
            dict(
                USAGE_DATABASE_URL=usage_url,
                USAGE_GRPC_PORT=usage_port,
                GENERATION_GRPC_TARGET=generation_target,
                **_identity(keys, "usage", serves=True),
            )
        ),
        clock=clock,
        runtime_config=config,
    )
    await usage_server.start()
    gateway = ThreadedUvicorn(
        create_gateway_app(
            GatewaySettings.model_validate(
                dict(
                    GENERATION_GRPC_TARGET=generation_target,
                    REPLICATE_WEBHOOK_SECRET=emulator.webhook_secret,
                    **_identity(keys, "webhook-gateway", serves=False),
                )
            ),
            runtime_config=config,
        ),
        name="traced-gateway",
    ).start()
    generation = await build_app(
        GenerationSettings.model_validate(
            dict(
                GENERATION_DATABASE_URL=database_factory("traced_generation"),
                USAGE_GRPC_TARGET=f"127.0.0.1:{usage_port}",
                WEBHOOK_BASE_URL=gateway.base_url,
                SWEEP_ENABLED=False,
                **s3_server.env(),
                **_identity(keys, "generation", serves=True),
            )
        ),
        runtime_config=config,
        clock=clock,
        provider=emulator_provider(emulator, config.replicate.model, timeout_seconds=5.0),
        port=int(generation_target.rsplit(":", 1)[1]),
    )
    await generation.server.start()
    edge = ThreadedUvicorn(
        create_edge_app(
            EdgeSettings.model_validate(
                dict(
                    GENERATION_GRPC_TARGET=generation_target,
                    USAGE_GRPC_TARGET=f"127.0.0.1:{usage_port}",
                    **s3_server.env(),
                    **_identity(keys, "edge-api", serves=False),
                )
            ),
            config,
        ),
        name="traced-edge",
    ).start()
    stack = Stack(
        edge=edge,
        gateway=gateway,
        emulator=emulator,
        generations=[generation],
        usage_server=usage_server,
        usage_target=f"127.0.0.1:{usage_port}",
        clock=clock,
        keys=keys,
        s3=s3_server,
    )
    try:
        yield stack
    finally:
        edge.stop()
        gateway.stop()
        await generation.server.stop(0)
        await usage_server.stop(0)
        emulator.stop()


@pytest.fixture
async def traced_user(traced_stack: Stack) -> AsyncIterator[User]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield User(traced_stack, client)
