"""Fixtures: a real gRPC generation double on port 0 and the gateway on real HTTP.

The double is a real ``kit.grpc_server.GrpcServer`` with a small servicer that
records what it receives and can be told to fail. The gateway runs under a real
uvicorn server inside the test's event loop, on a socket bound to port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import grpc
import httpx
import pytest
from standardwebhooks import Webhook
from structlog.testing import capture_logs

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.errors import InternalError, ValidationError
from kit.grpc_server import GrpcServer, ServiceBinding
from kit.runtime_config import RuntimeConfig, load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.servers import MovableClock, serve_in_loop
from webhook_gateway.app import create_app
from webhook_gateway.settings import GatewaySettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_PATH = "/api/v1/webhooks/replicate"
GENERATION_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name

Mode = Literal["ok", "internal", "invalid", "slow"]


@dataclass(frozen=True)
class ReceivedEvent:
    payload: bytes
    delivery_id: str
    request_id: str | None
    job_id: str = ""


class RecordingGeneration(generation_pb2_grpc.GenerationServiceServicer):
    """ApplyProviderEvent only: records each call, answers as told."""

    def __init__(self) -> None:
        self.received: list[ReceivedEvent] = []
        self.mode: Mode = "ok"
        self.outcome: int = generation_pb2.EVENT_OUTCOME_APPLIED
        self.slow_seconds = 2.0

    async def ApplyProviderEvent(
        self,
        request: generation_pb2.ApplyProviderEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> generation_pb2.ApplyProviderEventResponse:
        metadata = dict(context.invocation_metadata() or ())
        request_id = metadata.get("x-request-id")
        self.received.append(
            ReceivedEvent(
                request.payload,
                request.delivery_id,
                str(request_id) if request_id else None,
                request.job_id,
            )
        )
        if self.mode == "internal":
            raise InternalError()
        if self.mode == "invalid":
            raise ValidationError("The event is not a prediction.")
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        return generation_pb2.ApplyProviderEventResponse(
            outcome=self.outcome,  # type: ignore[arg-type]
            job_id="0b7c4a8e-2f53-4c39-9d8e-5f0a1c2b3d4e",
            status=generation_pb2.JOB_STATUS_SUCCEEDED,
        )


@dataclass
class GenerationDouble:
    servicer: RecordingGeneration
    server: GrpcServer
    target: str
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.server.stop(grace=0)


@pytest.fixture
async def generation() -> AsyncIterator[GenerationDouble]:
    # The other rpcs keep the generated base behaviour (UNIMPLEMENTED).
    servicer = RecordingGeneration()  # type: ignore[abstract]
    server = GrpcServer(
        [
            ServiceBinding(
                GENERATION_SERVICE,
                lambda s: generation_pb2_grpc.add_GenerationServiceServicer_to_server(servicer, s),
            )
        ],
        host="127.0.0.1",
        port=0,
        max_message_bytes=4 * 1024 * 1024,
    )
    port = await server.start()
    double = GenerationDouble(servicer, server, f"127.0.0.1:{port}")
    try:
        yield double
    finally:
        await double.stop()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@dataclass
class RunningGateway:
    base_url: str
    port: int
    client: httpx.AsyncClient
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [entry for entry in self.logs if entry.get("event") == name]


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningGateway]]


@pytest.fixture
def runtime_config() -> RuntimeConfig:
    return load_runtime_config(REPO_RUNTIME_CONFIG)


@pytest.fixture
def start_gateway(generation: GenerationDouble, runtime_config: RuntimeConfig) -> GatewayFactory:
    """``async with start_gateway(secret=..., ...) as gw``: a served gateway app."""

    @contextlib.asynccontextmanager
    async def start(
        *,
        secret: str | None = SECRET,
        max_body_bytes: int = 64 * 1024,
        deadline_seconds: float = 5.0,
        clock: MovableClock | None = None,
        runtime_config_file: Path | None = None,
    ) -> AsyncIterator[RunningGateway]:
        values: dict[str, Any] = {
            "GENERATION_GRPC_TARGET": generation.target,
            "REPLICATE_WEBHOOK_SECRET": secret,
            "WEBHOOK_MAX_BODY_BYTES": max_body_bytes,
            "GRPC_DEADLINE_SECONDS": deadline_seconds,
            "READY_CHECK_DEADLINE_SECONDS": 1.0,
        }
        if runtime_config_file is not None:
            values["RUNTIME_CONFIG_FILE"] = runtime_config_file
        settings = GatewaySettings.model_validate(values)
        with capture_logs() as logs:
            # With a file given, the app reads it itself (as in production).
            loaded = None if runtime_config_file is not None else runtime_config
            app = create_app(settings, runtime_config=loaded, clock=clock)
            async with (
                serve_in_loop(app) as base_url,
                httpx.AsyncClient(base_url=base_url, timeout=10.0) as client,
            ):
                port = int(base_url.rsplit(":", 1)[1])
                yield RunningGateway(base_url, port, client, logs)

    return start


def sign(
    body: bytes,
    *,
    secret: str = SECRET,
    msg_id: str = "msg_2xYwQkVnR7",
    at: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers, signed by the independent ``standardwebhooks`` library."""
    timestamp = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@pytest.fixture
def signer() -> Callable[..., dict[str, str]]:
    return sign
