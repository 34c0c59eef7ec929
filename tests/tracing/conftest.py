"""The whole system in one process with tracing on, every span kept in memory.

Tracing wraps process-wide functions (grpc.aio channels and servers, httpx, urllib3),
so this stack is its own: built after :func:`kit.tracing.setup_tracing` (channels and
engines made before it are not traced) and torn down, wrappers removed, before any
other suite's stack could be built with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kit import tracing
from kit.runtime_config import load_runtime_config
from replicate_emulator.config import EmulatorConfig
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.plugin import S3Endpoint
from testkit.stack import InProcessOptions, Stack, in_process_stack
from tests.e2e.harness import User


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
    """The in-process stack (testkit's one builder), started after tracing is on."""
    options = InProcessOptions(
        config=load_runtime_config(REPO_RUNTIME_CONFIG),
        emulator=EmulatorConfig(
            port=0,
            start_delay_seconds=0.05,
            run_delay_seconds=0.1,
            webhook_retry_base_seconds=0.05,
            log_level="WARNING",
        ),
        identity_keys=tmp_path_factory.mktemp("traced-keys"),
    )
    async with in_process_stack(options, database_factory, s3_server) as started:
        yield started


@pytest.fixture
async def traced_user(traced_stack: Stack) -> AsyncIterator[User]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield User(traced_stack, client)
