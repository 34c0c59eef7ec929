"""The real system in one process, as tests/e2e builds it, but with TWO generation
instances on one database, their background sweeps on, and short timings.

The edge talks to instance A and the webhook gateway to instance B, so requests,
refreshes, webhooks and sweeps of two instances race on the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from generation.wiring import GenerationApp, build_app
from kit.runtime_config import RuntimeConfig, Timings, load_runtime_config
from kit.settings import DEFAULT_RUNTIME_CONFIG
from launcher.components import free_port
from replicate_emulator.config import EmulatorConfig
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint
from testkit.providers import emulator_provider
from testkit.servers import MovableClock, ThreadedUvicorn
from tests.e2e.harness import Stack
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate
from webhook_gateway.app import create_app as create_gateway_app
from webhook_gateway.settings import GatewaySettings

TIMINGS = Timings(
    stale_after_ms=1500,
    poll_throttle_ms=1000,
    overall_timeout_ms=60_000,
    sweep_interval_ms=500,
    sweep_min_age_ms=1500,
)
# Everything shares one process (and the GIL) here: a loaded machine must not turn
# slowness into deadline errors, which are not what this suite is about.
EDGE_DEADLINE_SECONDS = 30.0


@dataclass
class Cluster:
    """The e2e harness's Stack (edge -> instance A) plus instance B and the usage DB."""

    stack: Stack
    second: GenerationApp
    usage_database_url: str
    generation_database_url: str
    # Where instance A listens (the edge's target).
    first_port: int = 0
    # Where instance B listens (a second edge may follow it; it may be restarted there).
    second_port: int = 0
    s3_server: S3Endpoint | None = None

    async def restart_second(self) -> None:
        """Stop instance B and start a new one on the same port (as a deploy would)."""
        await self.second.server.stop(0)
        if self.second.sweeper is not None:
            await self.second.sweeper.stop()
        assert self.s3_server is not None
        stack = self.stack
        self.second = await _generation(
            _config(),
            self.generation_database_url,
            stack.usage_target,
            stack.gateway,
            stack.emulator,
            self.s3_server,
            self.second_port,
        )


def _config() -> RuntimeConfig:
    base = load_runtime_config(DEFAULT_RUNTIME_CONFIG)
    return base.model_copy(update={"timings": TIMINGS})


async def _generation(
    config: RuntimeConfig,
    database_url: str,
    usage_target: str,
    gateway: ThreadedUvicorn,
    emulator: EmulatorServer,
    s3_server: S3Endpoint,
    port: int,
) -> GenerationApp:
    provider = emulator_provider(emulator, config.replicate.model, timeout_seconds=10.0)
    app = await build_app(
        GenerationSettings.model_validate(
            {
                "GENERATION_DATABASE_URL": database_url,
                "USAGE_GRPC_TARGET": usage_target,
                "WEBHOOK_BASE_URL": gateway.base_url,
                "SWEEP_ENABLED": True,
                **s3_server.env(),
            }
        ),
        runtime_config=config,
        provider=provider,
        port=port,
    )
    await app.server.start()
    if app.sweeper is not None:
        app.sweeper.start()
    return app


@asynccontextmanager
async def running_cluster(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> AsyncIterator[Cluster]:
    """Start every part; stop them all on the way out."""
    config = _config()
    emulator = EmulatorServer(
        EmulatorConfig(
            port=0,
            start_delay_seconds=0.05,
            run_delay_seconds=0.3,
            webhook_retry_base_seconds=0.05,
            webhook_max_attempts=6,
            log_level="WARNING",
        )
    )
    emulator.start()
    usage_port = free_port()
    usage_target = f"127.0.0.1:{usage_port}"
    second_port = free_port()
    usage_url = database_factory("usage")
    await migrate(usage_url)
    usage_server, _ = build_server(
        UsageSettings(
            USAGE_DATABASE_URL=usage_url,
            USAGE_GRPC_PORT=usage_port,
            GENERATION_GRPC_TARGET=f"127.0.0.1:{second_port}",
        ),
        runtime_config=config,
    )
    await usage_server.start()
    gateway = ThreadedUvicorn(
        create_gateway_app(
            GatewaySettings(
                GENERATION_GRPC_TARGET=f"127.0.0.1:{second_port}",
                REPLICATE_WEBHOOK_SECRET=emulator.webhook_secret,
            ),
            runtime_config=config,
        ),
        name="gateway",
    ).start()
    cluster: Cluster | None = None
    generation_url = database_factory("generation")
    parts = (config, generation_url, usage_target, gateway, emulator, s3_server)
    first_port = free_port()
    first = await _generation(*parts, first_port)
    second = await _generation(*parts, second_port)
    edge = ThreadedUvicorn(
        create_edge_app(
            EdgeSettings.model_validate(
                {
                    "GENERATION_GRPC_TARGET": f"127.0.0.1:{first_port}",
                    "USAGE_GRPC_TARGET": usage_target,
                    "GRPC_DEADLINE_SECONDS": EDGE_DEADLINE_SECONDS,
                    # Parallel submits by one user must reach the database (idempotency,
                    # one job in flight), and a burst of 100 must queue for the 8 slots
                    # rather than be shed: the edge's fairness limits are tested alone.
                    "MAX_UPLOADS_PER_USER": 64,
                    "UPLOAD_SLOT_WAIT_SECONDS": 60,
                    **s3_server.env(),
                }
            ),
            config,
        ),
        name="edge",
    ).start()
    stack = Stack(
        edge=edge,
        gateway=gateway,
        emulator=emulator,
        generation=first,
        usage_server=usage_server,
        usage_target=usage_target,
        clock=MovableClock(),
    )
    try:
        cluster = Cluster(
            stack, second, usage_url, generation_url, first_port, second_port, s3_server
        )
        yield cluster
    finally:
        edge.stop()
        gateway.stop()
        for app in (first, second if cluster is None else cluster.second):
            await app.server.stop(0)
        await usage_server.stop(0)
        emulator.stop()
