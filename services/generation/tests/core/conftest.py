"""The real generation servicer on port 0, with real PostgreSQL, S3 and usage server,
and the Replicate emulator as the provider.

Webhooks go to a recording receiver, not to a gateway: a test hands the body it
wants applied to ApplyProviderEvent itself, so every step is the test's to order.
One stack serves the module; each test uses a fresh owner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from generation.settings import GenerationSettings
from generation.wiring import build_app
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_client import create_channel
from kit.runtime_config import load_runtime_config
from replicate_emulator.config import EmulatorConfig
from services.generation.tests.core.stack import Core
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint
from testkit.providers import emulator_provider
from testkit.recorder import RecordingServer
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate


@pytest.fixture(scope="module")
async def core(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> AsyncIterator[Core]:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    # Predictions move only when a test advances them (the run takes a minute).
    emulator = EmulatorServer(
        EmulatorConfig(port=0, start_delay_seconds=0.01, run_delay_seconds=60, log_level="WARNING")
    )
    emulator.start()
    webhooks = RecordingServer("webhook-receiver", path="/hooks/replicate")
    webhooks.start()
    usage_url = database_factory("core_usage")
    await migrate(usage_url)
    usage_server, _ = build_server(UsageSettings(USAGE_DATABASE_URL=usage_url, USAGE_GRPC_PORT=0))
    usage_port = await usage_server.start()
    app = await build_app(
        GenerationSettings(
            GENERATION_DATABASE_URL=database_factory("core_generation"),
            USAGE_GRPC_TARGET=f"127.0.0.1:{usage_port}",
            WEBHOOK_BASE_URL=webhooks.url.removesuffix("/hooks/replicate"),
            SWEEP_ENABLED=False,
            # cast: pydantic types each field; the S3 env names are all strings.
            **cast(dict[str, Any], s3_server.env()),
        ),
        runtime_config=config,
        provider=emulator_provider(emulator, config.replicate.model, timeout_seconds=5.0),
        port=0,
    )
    port = await app.server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield Core(app, generation_pb2_grpc.GenerationServiceStub(channel), emulator, webhooks)
    finally:
        await channel.close()
        await app.server.stop(0)
        await usage_server.stop(0)
        webhooks.stop()
        emulator.stop()
