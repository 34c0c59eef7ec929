"""The one builder of the whole system for tests, the bench and the launcher's callers.

Two shapes, one place:

* :func:`in_process_stack`: usage and generation (one or more instances) as gRPC
  servers in the caller's event loop, the edge, the webhook gateway and the
  Replicate emulator under uvicorn in threads, all on port 0, against the session's
  real PostgreSQL and S3 server. The e2e, security, bad-input, metrics and
  concurrency suites use it.
* :func:`process_stack`: every part as a real process, exactly as ``make run``
  starts them (the launcher's :class:`launcher.stack.Stack`), on free ports in a
  temporary directory, with Envoy in front. The fault suites and the bench use it.

Each harness keeps only what is its own (fault knobs, topology, progress lines).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from generation.wiring import GenerationApp, WiredContext, build_app
from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.grpc_client import create_channel
from kit.grpc_server import GrpcServer
from kit.runtime_config import RuntimeConfig
from kit.service_identity import OPERATOR, USAGE, TokenSigner
from launcher.components import free_port
from launcher.config import LauncherConfig, Ports
from launcher.keys import ensure_key_dir
from launcher.stack import Stack as ProcessStack
from replicate_emulator.config import EmulatorConfig
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint
from testkit.providers import emulator_provider
from testkit.servers import MovableClock, ThreadedUvicorn
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate
from webhook_gateway.app import create_app as create_gateway_app
from webhook_gateway.settings import GatewaySettings

# Variables that would swap an embedded part of a process stack for an external one.
EXTERNAL_VARIABLES = (
    "DATABASE_URL", "GENERATION_DATABASE_URL", "USAGE_DATABASE_URL", "S3_ENDPOINT",
    "S3_PUBLIC_BASE_URL", "REPLICATE_API_BASE_URL", "WEBHOOK_BASE_URL",
    "GENERATION_GRPC_TARGET", "USAGE_GRPC_TARGET", "RUNTIME_CONFIG_FILE",
)  # fmt: skip


@dataclass
class Stack:
    """A running in-process system and the handles a test drives and inspects it with.

    ``generations`` are the generation instances on one database: the edge talks
    to the first, usage and the webhook gateway to the last (the same one when
    there is only one).
    """

    edge: ThreadedUvicorn
    gateway: ThreadedUvicorn
    emulator: EmulatorServer
    generations: list[GenerationApp]
    usage_server: GrpcServer
    usage_target: str
    clock: MovableClock
    # Service identity keys (launcher.keys layout): direct gRPC calls sign with them.
    keys: Path | None = None
    s3: S3Endpoint | None = None
    usage_database_url: str = ""
    generation_database_url: str = ""
    _restart: Callable[[int], Awaitable[GenerationApp]] | None = None
    _usage_channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    @property
    def generation(self) -> GenerationApp:
        """The instance the edge talks to."""
        return self.generations[0]

    @property
    def ctx(self) -> WiredContext:
        return self.generation.context

    @property
    def api(self) -> str:
        return f"{self.edge.base_url}/api/v1"

    def identity_env(self, name: str) -> dict[str, str]:
        """The settings a further client service (e.g. a second edge) signs with as ``name``."""
        return {} if self.keys is None else {"SERVICE_KEY_FILE": str(self.keys / f"{name}.key")}

    def edge_settings(self, instance: int = 0, **overrides: Any) -> EdgeSettings:
        """Settings of a further edge on this stack, talking to generation ``instance``."""
        port = self.generations[instance].server.port
        return EdgeSettings.model_validate(
            {
                "GENERATION_GRPC_TARGET": f"127.0.0.1:{port}",
                "USAGE_GRPC_TARGET": self.usage_target,
                **overrides,
                **(self.s3.env() if self.s3 is not None else {}),
                **self.identity_env("edge-api"),
            }
        )

    def signer(self, name: str) -> TokenSigner | None:
        """A signer for calls made as the service identity ``name``."""
        return None if self.keys is None else TokenSigner(name, self.keys / f"{name}.key")

    async def restart_generation(self, index: int) -> None:
        """Stop instance ``index`` and start a new one on the same port (as a deploy would)."""
        assert self._restart is not None
        await _stop_generation(self.generations[index])
        self.generations[index] = await self._restart(index)

    async def usage_stub(self, caller: str = OPERATOR) -> Any:
        """Usage, called as ``caller`` (plans and the audit are the operator's calls).

        ``Any``: the generated stubs type their calls as synchronous; on an aio
        channel they are awaitable."""
        if caller not in self._usage_channels:
            self._usage_channels[caller] = create_channel(
                self.usage_target, signer=self.signer(caller), audience=USAGE
            )
        return usage_pb2_grpc.UsageServiceStub(self._usage_channels[caller])

    async def set_plan(self, owner_id: Any, price_id: str) -> None:
        """Put ``owner_id`` on the plan of ``price_id`` (as billing would)."""
        stub = await self.usage_stub()
        await stub.SetPlan(
            usage_pb2.SetPlanRequest(owner_id=str(owner_id), price_id=price_id), timeout=5
        )

    async def audit(self) -> list[usage_pb2.Discrepancy]:
        """The ledger audit's findings (none when the books balance)."""
        stub = await self.usage_stub()
        response = await stub.AuditLedger(usage_pb2.AuditLedgerRequest(), timeout=30)
        return list(response.discrepancies)

    async def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the emulator's (synchronous) control client without blocking the loop."""
        return await asyncio.to_thread(getattr(self.emulator.control, method), *args, **kwargs)


@dataclass(frozen=True)
class InProcessOptions:
    """What differs between the in-process harnesses."""

    config: RuntimeConfig
    emulator: EmulatorConfig
    generation_instances: int = 1
    # Generation's background sweep (off: tests call it when they want it).
    sweep: bool = False
    # Service identity on, as deployed (keys are made in this directory).
    identity_keys: Path | None = None
    provider_timeout_seconds: float = 5.0
    # Settings of the edge beyond its targets, storage and identity.
    edge: Mapping[str, Any] = field(default_factory=dict)
    # Settings of generation beyond its database, targets, storage and identity.
    generation: Mapping[str, Any] = field(default_factory=dict)


def _identity(keys: Path | None, name: str, *, serves: bool) -> dict[str, str]:
    """The service's own key (and the trust dir when it serves), or nothing."""
    if keys is None:
        return {}
    env = {"SERVICE_KEY_FILE": str(keys / f"{name}.key")}
    if serves:
        env["SERVICE_TRUST_DIR"] = str(keys / "trust")
    return env


async def _stop_generation(app: GenerationApp) -> None:
    await app.server.stop(0)
    if app.sweeper is not None:
        await app.sweeper.stop()


@asynccontextmanager
async def in_process_stack(
    options: InProcessOptions, database_factory: Callable[[str], str], s3: S3Endpoint
) -> AsyncIterator[Stack]:
    """Start every part (see the module docstring); stop them all on the way out."""
    if options.identity_keys is not None:
        ensure_key_dir(options.identity_keys)
    keys, config, clock = options.identity_keys, options.config, MovableClock()
    ports = [free_port() for _ in range(options.generation_instances)]
    usage_port = free_port()
    usage_target, followed = f"127.0.0.1:{usage_port}", f"127.0.0.1:{ports[-1]}"
    async with AsyncExitStack() as parts:
        emulator = EmulatorServer(options.emulator)
        emulator.start()
        parts.callback(emulator.stop)
        usage_url = database_factory("usage")
        await migrate(usage_url)
        usage_server, _ = build_server(
            UsageSettings.model_validate(
                {
                    "USAGE_DATABASE_URL": usage_url,
                    "USAGE_GRPC_PORT": usage_port,
                    "GENERATION_GRPC_TARGET": followed,
                    **_identity(keys, "usage", serves=True),
                }
            ),
            clock=clock,
            runtime_config=config,
        )
        await usage_server.start()
        parts.push_async_callback(usage_server.stop, 0)
        gateway = ThreadedUvicorn(
            create_gateway_app(
                GatewaySettings.model_validate(
                    {
                        "GENERATION_GRPC_TARGET": followed,
                        "REPLICATE_WEBHOOK_SECRET": emulator.webhook_secret,
                        **_identity(keys, "webhook-gateway", serves=False),
                    }
                ),
                runtime_config=config,
            ),
            name="gateway",
        ).start()
        parts.callback(gateway.stop)
        generation_url = database_factory("generation")

        async def start_generation(index: int) -> GenerationApp:
            provider = emulator_provider(
                emulator, config.replicate.model, options.provider_timeout_seconds
            )
            settings = GenerationSettings.model_validate(
                {
                    "GENERATION_DATABASE_URL": generation_url,
                    "USAGE_GRPC_TARGET": usage_target,
                    "WEBHOOK_BASE_URL": gateway.base_url,
                    "SWEEP_ENABLED": options.sweep,
                    **s3.env(),
                    **_identity(keys, "generation", serves=True),
                    **options.generation,
                }
            )
            app = await build_app(
                settings, runtime_config=config, clock=clock, provider=provider, port=ports[index]
            )
            await app.server.start()
            if app.sweeper is not None:
                app.sweeper.start()
            return app

        generations: list[GenerationApp] = []

        async def stop_generations() -> None:
            for app in generations:
                await _stop_generation(app)

        parts.push_async_callback(stop_generations)
        for index in range(len(ports)):
            generations.append(await start_generation(index))
        edge = ThreadedUvicorn(
            create_edge_app(
                EdgeSettings.model_validate(
                    {
                        "GENERATION_GRPC_TARGET": f"127.0.0.1:{ports[0]}",
                        "USAGE_GRPC_TARGET": usage_target,
                        **options.edge,
                        **s3.env(),
                        **_identity(keys, "edge-api", serves=False),
                    }
                ),
                config,
            ),
            name="edge",
        ).start()
        parts.callback(edge.stop)
        yield Stack(
            edge=edge,
            gateway=gateway,
            emulator=emulator,
            generations=generations,
            usage_server=usage_server,
            usage_target=usage_target,
            clock=clock,
            keys=keys,
            s3=s3,
            usage_database_url=usage_url,
            generation_database_url=generation_url,
            _restart=start_generation,
        )


@contextmanager
def process_stack(
    env: Mapping[str, str],
    *,
    say: Callable[[str, str], None] | None = None,
    prefix: str = "interior-stack-",
) -> Iterator[ProcessStack]:
    """Every part as a process (the launcher's Stack) on free ports, data in a temporary
    directory; ``env`` adds to (or overrides) this process's environment, minus any
    variable that would point a part at an external server. Stopped and removed after."""
    # Not pytest's tmp_path: PostgreSQL runs as another user when the tests run as root.
    with tempfile.TemporaryDirectory(prefix=prefix) as raw:
        environ = {k: v for k, v in os.environ.items() if k not in EXTERNAL_VARIABLES}
        environ["LAUNCHER_DATA_DIR"] = str(Path(raw) / "data")
        environ.update(env)
        config = LauncherConfig.from_env(environ).with_ports(Ports.free())
        with ProcessStack(config, say=say or (lambda _line, _end: None)) as stack:
            yield stack
