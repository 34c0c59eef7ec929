"""The one stand-in for the generation and usage services, for every test that needs one.

Small in-memory servicers: they keep jobs per owner, answer NotFound for unknown or
foreign jobs, record every request with its metadata and the deadline its caller
left, and can be told to wait or fail with any domain error. They run behind kit's
real GrpcServer (interceptors included), so errors reach callers exactly as the
real services send them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.errors import DomainError, JobNotCancellable, JobNotFinished, NotFound
from kit.grpc_interceptors import STOP_SENDING
from kit.grpc_server import GrpcServer, ServiceBinding

DEFAULT_OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
TERMINAL = {
    generation_pb2.JOB_STATUS_SUCCEEDED,
    generation_pb2.JOB_STATUS_FAILED,
    generation_pb2.JOB_STATUS_CANCELED,
}


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
    # Seconds of the caller's deadline left on arrival (None: the call had none).
    deadline_left: float | None = None


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
        call = Call(method, request, metadata, deadline_left=context.time_remaining())
        if received is not None:
            call.files, call.chunk_sizes = received.files, received.chunk_sizes
        self.calls.append(call)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail_with is not None:
            raise self.fail_with

    def named(self, method: str) -> list[Call]:
        """The calls of ``method``, in order."""
        return [call for call in self.calls if call.method == method]

    @property
    def remaining(self) -> dict[str, float | None]:
        """Method name -> seconds its caller left (the latest call of each)."""
        return {call.method: call.deadline_left for call in self.calls}


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

    def add_job(self, owner_id: str = DEFAULT_OWNER, **fields: Any) -> generation_pb2.Job:
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
            # As generation does (api/intake.py): ask the sender to stop, read what it still
            # sends, then answer, so the status never races a write (grpc/grpc#36066).
            await context.send_initial_metadata(STOP_SENDING)
            async for _ in request_iterator:
                pass
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

    async def ApplyProviderEvent(
        self, request: generation_pb2.ApplyProviderEventRequest, context: Any
    ) -> generation_pb2.ApplyProviderEventResponse:
        await self.recorder.record("ApplyProviderEvent", request, context)
        # No job here matches a provider's prediction: the event changes nothing.
        return generation_pb2.ApplyProviderEventResponse(outcome=generation_pb2.EVENT_OUTCOME_STALE)


class UsageBackend(usage_pb2_grpc.UsageServiceServicer):
    """An in-memory usage service: everyone is on a free plan with 3 of 10 used."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.recorder = Recorder()
        # Set: the quota every caller gets instead (a test's own figures).
        self.quota: usage_pb2.Quota | None = None

    async def GetQuota(self, request: usage_pb2.GetQuotaRequest, context: Any) -> usage_pb2.Quota:
        await self.recorder.record("GetQuota", request, context)
        return self.quota if self.quota is not None else free_quota()


def free_quota(monthly_generations: int = 10, used: int = 3, remaining: int = 7) -> usage_pb2.Quota:
    """The stand-in's answer: the free plan in November 2026, 3 of 10 used unless told."""
    return usage_pb2.Quota(
        plan="free",
        monthly_generations=monthly_generations,
        used=used,
        remaining=remaining,
        period_start=timestamp(datetime(2026, 11, 1, tzinfo=UTC)),
        period_end=timestamp(datetime(2026, 12, 1, tzinfo=UTC)),
    )


@dataclass
class Backends:
    """Both stand-ins, served together."""

    generation: GenerationBackend
    usage: UsageBackend
    server: GrpcServer
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def remaining(self) -> dict[str, float | None]:
        """Method name -> seconds its caller left, across both services."""
        return {**self.generation.recorder.remaining, **self.usage.recorder.remaining}

    def reset(self) -> None:
        """Empty, and failing nothing, again."""
        self.generation.reset()
        self.usage.reset()


@asynccontextmanager
async def serving_backends(
    generation: GenerationBackend | None = None, max_message_bytes: int = 4 * 1024 * 1024
) -> AsyncIterator[Backends]:
    """The stand-ins (``generation`` may be a subclass) on 127.0.0.1 and a free port."""
    # The rpcs no caller of a stand-in uses keep the generated UNIMPLEMENTED answer.
    generation = generation or GenerationBackend()  # type: ignore[abstract]
    usage = UsageBackend()  # type: ignore[abstract]
    server = standin_server(generation, usage, max_message_bytes)
    port = await server.start()
    try:
        yield Backends(generation, usage, server, port)
    finally:
        await server.stop(0)


def standin_server(
    generation: generation_pb2_grpc.GenerationServiceServicer,
    usage: usage_pb2_grpc.UsageServiceServicer,
    max_message_bytes: int,
) -> GrpcServer:
    """Both servicers on 127.0.0.1 and a free port (``await server.start()`` gives it)."""
    return GrpcServer(
        [
            ServiceBinding(
                "interior.generation.v1.GenerationService",
                lambda s: generation_pb2_grpc.add_GenerationServiceServicer_to_server(
                    generation, s
                ),
            ),
            ServiceBinding(
                "interior.usage.v1.UsageService",
                lambda s: usage_pb2_grpc.add_UsageServiceServicer_to_server(usage, s),
            ),
        ],
        host="127.0.0.1",
        port=0,
        max_message_bytes=max_message_bytes,
    )
