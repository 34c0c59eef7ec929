"""Fixtures of the edge suite: real gRPC backends on port 0, the edge app, tokens.

The two backends are small in-memory servicers standing for the generation and
usage services: they keep jobs per owner, answer NotFound for unknown or foreign
jobs, record every request with its metadata, and can be told to fail with any
domain error. They run behind kit's real GrpcServer (interceptors included), so
errors reach the edge exactly as the real services send them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import jwt
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp

from edge_api.app import create_app
from edge_api.clients import Clients, open_clients
from edge_api.settings import EdgeSettings
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.errors import DomainError, JobNotCancellable, JobNotFinished, NotFound
from kit.grpc_server import GrpcServer
from kit.runtime_config import RuntimeConfig, Uploads, load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.standins import standin_server

SECRET = "edge-test-secret-0123456789abcdef-0123456789"
OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
OTHER_OWNER = "0e5f2a1c-3d4b-4c6e-8f7a-9b0c1d2e3f4a"
# Small uploads keep the size tests fast.
MAX_UPLOAD_BYTES = 64 * 1024
PERIOD_END = "2026-12-01T00:00:00.000Z"
TERMINAL = {
    generation_pb2.JOB_STATUS_SUCCEEDED,
    generation_pb2.JOB_STATUS_FAILED,
    generation_pb2.JOB_STATUS_CANCELED,
}


def make_token(
    sub: object = OWNER,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    lifetime: timedelta = timedelta(minutes=5),
    **claims: Any,
) -> str:
    """A user token; keyword claims override (None removes) the defaults."""
    now = datetime.now(UTC)
    payload: dict[str, Any] = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + lifetime,
    }
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def auth(token: str | None = None) -> dict[str, str]:
    """The Authorization header for ``token`` (a fresh valid one by default)."""
    return {"Authorization": f"Bearer {token or make_token()}"}


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass
class Call:
    """One request a backend received, with the metadata it came with.

    For SubmitGeneration, ``request`` is the stream's request part, ``files`` the
    inputs reassembled from their chunks and ``chunk_sizes`` every chunk's size.
    """

    method: str
    request: Any
    metadata: dict[str, str]
    files: list[tuple[str, bytes]] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    fail_with: DomainError | Exception | None = None
    delay_seconds: float = 0.0

    async def record(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        received: Call | None = None,
    ) -> None:
        metadata = {
            key: value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        call = Call(method, request, metadata)
        if received is not None:
            call.files, call.chunk_sizes = received.files, received.chunk_sizes
        self.calls.append(call)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_with is not None:
            raise self.fail_with

    def named(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]


async def read_submission_stream(
    parts: AsyncIterator[generation_pb2.SubmitGenerationPart],
) -> Call:
    """The request part and the files put back together from their chunks."""
    first = await anext(parts)
    assert first.WhichOneof("part") == "request"
    request = first.request
    data = [bytearray() for _ in request.inputs]
    sizes: list[int] = []
    async for part in parts:
        assert part.WhichOneof("part") == "chunk"
        data[part.chunk.input_index] += part.chunk.data
        sizes.append(len(part.chunk.data))
    files = [(item.field, bytes(body)) for item, body in zip(request.inputs, data, strict=True)]
    assert [len(body) for _, body in files] == [item.size_bytes for item in request.inputs]
    return Call("SubmitGeneration", request, {}, files, sizes)


class GenerationBackend(generation_pb2_grpc.GenerationServiceServicer):
    """An in-memory generation service."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.recorder = Recorder()
        # Raised right after the request part, before any chunk is read.
        self.refuse_request: DomainError | None = None
        self.jobs: dict[str, generation_pb2.Job] = {}
        self.by_key: dict[tuple[str, str], str] = {}

    def add_job(self, owner_id: str = OWNER, **fields: Any) -> generation_pb2.Job:
        """Store a job (starting by default) and return it."""
        now = timestamp(datetime(2026, 11, 5, 9, 30, tzinfo=UTC))
        job = generation_pb2.Job(
            id=str(uuid.uuid4()),
            owner_id=owner_id,
            status=generation_pb2.JOB_STATUS_STARTING,
            settings=generation_pb2.JobSettings(mode="redesign", room_type="", style=""),
            created_at=now,
            updated_at=now,
        )
        for name, value in fields.items():
            if isinstance(value, datetime):
                getattr(job, name).CopyFrom(timestamp(value))
            elif isinstance(value, list):
                getattr(job, name).extend(value)
            elif hasattr(value, "CopyFrom"):
                getattr(job, name).CopyFrom(value)
            else:
                setattr(job, name, value)
        self.jobs[job.id] = job
        return job

    def _owned(self, owner_id: str, job_id: str) -> generation_pb2.Job:
        job = self.jobs.get(job_id)
        if job is None or job.owner_id != owner_id:
            raise NotFound("Generation not found.")
        return job

    async def SubmitGeneration(
        self, request_iterator: AsyncIterator[generation_pb2.SubmitGenerationPart], context: Any
    ) -> generation_pb2.SubmitGenerationResponse:
        if self.refuse_request is not None:
            await anext(request_iterator)
            raise self.refuse_request
        received = await read_submission_stream(request_iterator)
        request = received.request
        await self.recorder.record("SubmitGeneration", request, context, received)
        key = (request.owner_id, request.idempotency_key)
        if request.idempotency_key and key in self.by_key:
            job = self.jobs[self.by_key[key]]
            return generation_pb2.SubmitGenerationResponse(job=job, replayed=True)
        job = self.add_job(
            request.owner_id,
            prediction_id="pred-" + uuid.uuid4().hex[:8],
            settings=generation_pb2.JobSettings(
                mode=request.mode, room_type=request.room_type, style=request.style
            ),
        )
        if request.idempotency_key:
            self.by_key[key] = job.id
        return generation_pb2.SubmitGenerationResponse(job=job)

    async def GetGeneration(
        self, request: generation_pb2.GetGenerationRequest, context: Any
    ) -> generation_pb2.GetGenerationResponse:
        await self.recorder.record("GetGeneration", request, context)
        return generation_pb2.GetGenerationResponse(
            job=self._owned(request.owner_id, request.job_id)
        )

    async def CancelGeneration(
        self, request: generation_pb2.CancelGenerationRequest, context: Any
    ) -> generation_pb2.CancelGenerationResponse:
        await self.recorder.record("CancelGeneration", request, context)
        job = self._owned(request.owner_id, request.job_id)
        if job.status in TERMINAL:
            raise JobNotCancellable()
        job.status = generation_pb2.JOB_STATUS_CANCELED
        job.error.CopyFrom(generation_pb2.JobError(code="CANCELED", message="Canceled."))
        job.completed_at.CopyFrom(timestamp(datetime(2026, 11, 5, 9, 31, tzinfo=UTC)))
        return generation_pb2.CancelGenerationResponse(job=job)

    async def DeleteGeneration(
        self, request: generation_pb2.DeleteGenerationRequest, context: Any
    ) -> generation_pb2.DeleteGenerationResponse:
        await self.recorder.record("DeleteGeneration", request, context)
        job = self._owned(request.owner_id, request.job_id)
        if job.status not in TERMINAL:
            raise JobNotFinished()
        job.render_id = ""
        del job.variants[:]
        return generation_pb2.DeleteGenerationResponse(job=job)


class UsageBackend(usage_pb2_grpc.UsageServiceServicer):
    """An in-memory usage service: everyone is on a free plan with 3 of 10 used."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.recorder = Recorder()

    async def GetQuota(self, request: usage_pb2.GetQuotaRequest, context: Any) -> usage_pb2.Quota:
        await self.recorder.record("GetQuota", request, context)
        return usage_pb2.Quota(
            plan="free",
            monthly_generations=10,
            used=3,
            remaining=7,
            period_start=timestamp(datetime(2026, 11, 1, tzinfo=UTC)),
            period_end=timestamp(datetime(2026, 12, 1, tzinfo=UTC)),
        )


@dataclass
class Backends:
    generation: GenerationBackend
    usage: UsageBackend
    server: GrpcServer
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
async def backends() -> AsyncIterator[Backends]:
    generation, usage = GenerationBackend(), UsageBackend()
    server = standin_server(generation, usage, max_message_bytes=24 * 1024 * 1024)
    port = await server.start()
    yield Backends(generation, usage, server, port)
    await server.stop(0)


@pytest.fixture(autouse=True)
def _fresh_backends(request: pytest.FixtureRequest) -> None:
    """Every test starts with empty backends that do not fail."""
    if "backends" in request.fixturenames:
        backends: Backends = request.getfixturevalue("backends")
        backends.generation.reset()
        backends.usage.reset()


@pytest.fixture(scope="session")
def runtime_config() -> RuntimeConfig:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    return config.model_copy(update={"uploads": Uploads(max_bytes=MAX_UPLOAD_BYTES)})


SettingsFactory = Callable[..., EdgeSettings]


@pytest.fixture
def make_settings(backends: Backends) -> SettingsFactory:
    """Settings pointing at the test backends; keyword arguments override by alias."""

    def build(**overrides: Any) -> EdgeSettings:
        values: dict[str, Any] = {
            "AUTH_JWT_SECRET": SECRET,
            "GENERATION_GRPC_TARGET": backends.target,
            "USAGE_GRPC_TARGET": backends.target,
            # Storage is only contacted by the public-file tests, which bring a real one.
            "S3_ENDPOINT": "127.0.0.1:9",
            "S3_ACCESS_KEY": "unused",
            "S3_SECRET_KEY": "unused-secret",
            "S3_PUBLIC_BASE_URL": None,
            "GRPC_DEADLINE_SECONDS": 5,
        }
        values.update(overrides)
        return EdgeSettings.model_validate(values)

    return build


@dataclass
class EdgeClients:
    """Opens in-process clients to edge apps and closes them all at the end."""

    runtime_config: RuntimeConfig
    make_settings: SettingsFactory
    opened: list[tuple[httpx.AsyncClient, Clients]] = field(default_factory=list)

    async def open(
        self,
        settings: EdgeSettings | None = None,
        prepare: Callable[[FastAPI], None] | None = None,
    ) -> httpx.AsyncClient:
        """A client of a new app; ``prepare`` may add test-only routes first."""
        settings = settings or self.make_settings()
        clients = open_clients(settings)
        app = create_app(settings, self.runtime_config, clients)
        if prepare is not None:
            prepare(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://edge.test"
        )
        self.opened.append((client, clients))
        return client

    async def close(self) -> None:
        for client, clients in self.opened:
            await client.aclose()
            await clients.close()


@pytest.fixture
async def edge_clients(
    runtime_config: RuntimeConfig, make_settings: SettingsFactory
) -> AsyncIterator[EdgeClients]:
    opened = EdgeClients(runtime_config, make_settings)
    yield opened
    await opened.close()


@pytest.fixture
async def client(edge_clients: EdgeClients) -> httpx.AsyncClient:
    """An in-process client of an edge wired to the test backends."""
    return await edge_clients.open()


@dataclass(frozen=True)
class Identity:
    """Who the tests act as, and how they make tokens."""

    owner: str = OWNER
    other_owner: str = OTHER_OWNER
    secret: str = SECRET

    @staticmethod
    def token(sub: object = OWNER, **options: Any) -> str:
        return make_token(sub, **options)

    @staticmethod
    def headers(token: str | None = None) -> dict[str, str]:
        return auth(token)


@pytest.fixture(scope="session")
def identity() -> Identity:
    return Identity()
