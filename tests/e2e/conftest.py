"""Session fixture: the whole system, real parts, started once for the e2e suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from generation.wiring import build_app
from kit.runtime_config import Plan, load_runtime_config
from kit.settings import DEFAULT_RUNTIME_CONFIG
from launcher.components import free_port
from launcher.keys import ensure_key_dir
from replicate_emulator.config import EmulatorConfig
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint
from testkit.providers import emulator_provider
from testkit.servers import MovableClock, ThreadedUvicorn
from tests.e2e.harness import Stack, User
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate
from webhook_gateway.app import create_app as create_gateway_app
from webhook_gateway.settings import GatewaySettings


def _identity(keys: Path, name: str, *, serves: bool) -> dict[str, str]:
    """Service identity on, as deployed: the service's own key (and the trust dir)."""
    env = {"SERVICE_KEY_FILE": str(keys / f"{name}.key")}
    if serves:
        env["SERVICE_TRUST_DIR"] = str(keys / "trust")
    return env


@pytest.fixture(scope="session")
async def stack(
    database_factory: Callable[[str], str],
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    keys = tmp_path_factory.mktemp("service-keys")
    ensure_key_dir(keys)
    base = load_runtime_config(DEFAULT_RUNTIME_CONFIG)
    # A tiny plan so quota tests do not need many generations.
    config = base.model_copy(
        update={"plans": {**base.plans, "price_test_one": Plan(name="one", monthly_generations=1)}}
    )
    clock = MovableClock()
    emulator = EmulatorServer(
        EmulatorConfig(
            port=0,
            start_delay_seconds=0.05,
            run_delay_seconds=0.25,
            webhook_retry_base_seconds=0.05,
            webhook_max_attempts=5,
            log_level="WARNING",
        )
    )
    emulator.start()
    generation_port, usage_port = free_port(), free_port()
    generation_target = f"127.0.0.1:{generation_port}"
    usage_target = f"127.0.0.1:{usage_port}"

    usage_url = database_factory("usage")
    await migrate(usage_url)
    usage_server, _ = build_server(
        UsageSettings(
            USAGE_DATABASE_URL=usage_url,
            USAGE_GRPC_PORT=usage_port,
            GENERATION_GRPC_TARGET=generation_target,
            **_identity(keys, "usage", serves=True),
        ),
        clock=clock,
        runtime_config=config,
    )
    await usage_server.start()

    gateway = ThreadedUvicorn(
        create_gateway_app(
            GatewaySettings(
                GENERATION_GRPC_TARGET=generation_target,
                REPLICATE_WEBHOOK_SECRET=emulator.webhook_secret,
                **_identity(keys, "webhook-gateway", serves=False),
            ),
            runtime_config=config,
        ),
        name="gateway",
    ).start()

    provider = emulator_provider(emulator, config.replicate.model, timeout_seconds=5.0)
    generation = await build_app(
        GenerationSettings(
            GENERATION_DATABASE_URL=database_factory("generation"),
            USAGE_GRPC_TARGET=usage_target,
            WEBHOOK_BASE_URL=gateway.base_url,
            SWEEP_ENABLED=False,
            **s3_server.env(),
            **_identity(keys, "generation", serves=True),
        ),
        runtime_config=config,
        clock=clock,
        provider=provider,
        port=generation_port,
    )
    await generation.server.start()

    edge = ThreadedUvicorn(
        create_edge_app(
            EdgeSettings(
                GENERATION_GRPC_TARGET=generation_target,
                USAGE_GRPC_TARGET=usage_target,
                # These suites fire many parallel submits by one user to prove the
                # database's one-job-in-flight rule; the edge's per-user upload limit
                # (tested on its own) would refuse most of them before they got there.
                MAX_UPLOADS_PER_USER=64,
                **s3_server.env(),
                **_identity(keys, "edge-api", serves=False),
            ),
            config,
        ),
        name="edge",
    ).start()

    stack = Stack(
        edge=edge,
        gateway=gateway,
        emulator=emulator,
        generation=generation,
        usage_server=usage_server,
        usage_target=usage_target,
        clock=clock,
        keys=keys,
    )
    try:
        yield stack
    finally:
        edge.stop()
        gateway.stop()
        await generation.server.stop(0)
        await usage_server.stop(0)
        emulator.stop()


@pytest.fixture(scope="session", autouse=True)
async def books_balance_at_the_end(stack: Stack) -> AsyncIterator[None]:
    """After every end-to-end test has run, whatever their order: the books must balance.

    A failure here is reported as an error at teardown and fails the run.
    """
    yield
    discrepancies = await stack.audit()
    assert [(d.kind, d.job_id, d.detail) for d in discrepancies] == []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
async def reset_emulator(stack: Stack) -> AsyncIterator[None]:
    await stack.control("reset")
    yield
    await stack.control("reset")


@pytest.fixture
def user(stack: Stack, http: httpx.AsyncClient, reset_emulator: None) -> User:
    return User(stack, http)


@pytest.fixture
def other_user(stack: Stack, http: httpx.AsyncClient) -> User:
    return User(stack, http)
