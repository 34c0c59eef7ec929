"""Stand-in gRPC servicers (generation and usage) behind kit's real GrpcServer.

They record what the caller sent (the deadline left, how many calls run at once)
and answer with minimal valid messages, so the real edge and gateway can be
observed from the server side.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from testkit.standins import standin_server

OWNER = uuid.uuid4()


@dataclass
class Recorder:
    """method name -> seconds the caller left (None: the call had no deadline)."""

    remaining: dict[str, float | None] = field(default_factory=dict)

    def note(self, method: str, context: Any) -> None:
        self.remaining[method] = context.time_remaining()


def _job() -> generation_pb2.Job:
    now = Timestamp()
    now.GetCurrentTime()
    return generation_pb2.Job(
        id=str(uuid.uuid4()),
        owner_id=str(OWNER),
        status=generation_pb2.JOB_STATUS_PROCESSING,
        settings=generation_pb2.JobSettings(mode="imagine"),
        created_at=now,
        updated_at=now,
    )


class StandInGeneration(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def SubmitGeneration(self, request_iterator: Any, context: Any) -> Any:
        self.recorder.note("SubmitGeneration", context)
        async for _ in request_iterator:  # the request part, then any chunks
            pass
        return generation_pb2.SubmitGenerationResponse(job=_job())

    async def GetGeneration(self, request: Any, context: Any) -> Any:
        self.recorder.note("GetGeneration", context)
        return generation_pb2.GetGenerationResponse(job=_job())

    async def CancelGeneration(self, request: Any, context: Any) -> Any:
        self.recorder.note("CancelGeneration", context)
        return generation_pb2.CancelGenerationResponse(job=_job())

    async def DeleteGeneration(self, request: Any, context: Any) -> Any:
        self.recorder.note("DeleteGeneration", context)
        return generation_pb2.DeleteGenerationResponse(job=_job())

    async def ApplyProviderEvent(self, request: Any, context: Any) -> Any:
        self.recorder.note("ApplyProviderEvent", context)
        return generation_pb2.ApplyProviderEventResponse(outcome=generation_pb2.EVENT_OUTCOME_STALE)


class StandInUsage(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def GetQuota(self, request: Any, context: Any) -> Any:
        self.recorder.note("GetQuota", context)
        return usage_pb2.Quota(plan="free", monthly_generations=10, remaining=10)


@asynccontextmanager
async def serving(
    generation: generation_pb2_grpc.GenerationServiceServicer, recorder: Recorder
) -> AsyncIterator[str]:
    """Both stand-ins on a free port; yields the target ``127.0.0.1:<port>``."""
    server = standin_server(generation, StandInUsage(recorder), max_message_bytes=4 * 1024 * 1024)
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
