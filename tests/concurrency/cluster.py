"""The real system in one process, as tests/e2e builds it (testkit.stack), but with TWO
generation instances on one database, their background sweeps on, and short timings.

The edge talks to instance A and the webhook gateway to instance B, so requests,
refreshes, webhooks and sweeps of two instances race on the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from generation.wiring import GenerationApp
from kit.runtime_config import RuntimeConfig, Timings, load_runtime_config
from replicate_emulator.config import EmulatorConfig
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.plugin import S3Endpoint
from testkit.stack import InProcessOptions, Stack, in_process_stack

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
    """The testkit's Stack with two generation instances (A: the edge's, B: the rest's)."""

    stack: Stack

    @property
    def second(self) -> GenerationApp:
        return self.stack.generations[1]

    @property
    def usage_database_url(self) -> str:
        return self.stack.usage_database_url

    @property
    def generation_database_url(self) -> str:
        return self.stack.generation_database_url

    async def restart_second(self) -> None:
        """Stop instance B and start a new one on the same port (as a deploy would)."""
        await self.stack.restart_generation(1)


def _config() -> RuntimeConfig:
    base = load_runtime_config(REPO_RUNTIME_CONFIG)
    return base.model_copy(update={"timings": TIMINGS})


OPTIONS = InProcessOptions(
    config=_config(),
    emulator=EmulatorConfig(
        port=0,
        start_delay_seconds=0.05,
        run_delay_seconds=0.3,
        webhook_retry_base_seconds=0.05,
        webhook_max_attempts=6,
        log_level="WARNING",
    ),
    generation_instances=2,
    sweep=True,
    provider_timeout_seconds=10.0,
    edge={
        "GRPC_DEADLINE_SECONDS": EDGE_DEADLINE_SECONDS,
        # Parallel submits by one user must reach the database (idempotency,
        # one job in flight), and a burst of 100 must queue for the 8 slots
        # rather than be shed: the edge's fairness limits are tested alone.
        "MAX_UPLOADS_PER_USER": 64,
        "UPLOAD_SLOT_WAIT_SECONDS": 60,
    },
)


@asynccontextmanager
async def running_cluster(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> AsyncIterator[Cluster]:
    """Start every part; stop them all on the way out."""
    async with in_process_stack(OPTIONS, database_factory, s3_server) as stack:
        yield Cluster(stack)
