"""Driving the real generation servicer: submissions, webhooks applied by hand, reads."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from generation.wiring import GenerationApp
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_errors import RemoteError, from_rpc_error
from testkit.emulator import EmulatorServer
from testkit.recorder import RecordingServer

PROMPT = "a bright scandinavian living room with oak floors"
CALL_TIMEOUT = 30.0


@dataclass
class Core:
    app: GenerationApp
    stub: generation_pb2_grpc.GenerationServiceAsyncStub
    emulator: EmulatorServer
    webhooks: RecordingServer

    async def submit(
        self, owner: uuid.UUID, *, key: str = "", prompt: str = PROMPT
    ) -> pb.SubmitGenerationResponse:
        request = pb.SubmitGenerationRequest(
            owner_id=str(owner), idempotency_key=key, mode="imagine", prompt=prompt
        )
        parts = iter([pb.SubmitGenerationPart(request=request)])
        response: pb.SubmitGenerationResponse = await self.stub.SubmitGeneration(
            parts, timeout=CALL_TIMEOUT
        )
        return response

    async def apply_webhook(self, prediction_id: str, status: str) -> pb.ApplyProviderEventResponse:
        """Move the prediction at the emulator, then apply the webhook it sent for that."""
        await self.advance(prediction_id, status)
        return await self.redeliver(prediction_id, status)

    async def advance(self, prediction_id: str, status: str) -> None:
        """Move the prediction at the emulator only (its webhook is not applied)."""
        await asyncio.to_thread(self.emulator.control.advance, prediction_id, status)

    async def redeliver(self, prediction_id: str, status: str) -> pb.ApplyProviderEventResponse:
        """Apply (again) the webhook the emulator sent when the prediction reached ``status``."""
        body = await asyncio.to_thread(self._webhook_body, prediction_id, status)
        response: pb.ApplyProviderEventResponse = await self.stub.ApplyProviderEvent(
            pb.ApplyProviderEventRequest(payload=body), timeout=CALL_TIMEOUT
        )
        return response

    def _webhook_body(self, prediction_id: str, status: str) -> bytes:
        """The body of the webhook that told ``status`` (polled with a deadline)."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for received in reversed(self.webhooks.snapshot()):
                event: dict[str, Any] = json.loads(received.body)
                if event.get("id") == prediction_id and event.get("status") == status:
                    return received.body
            time.sleep(0.02)
        raise AssertionError(f"no {status} webhook for {prediction_id}")

    async def get(self, owner: uuid.UUID, job_id: str) -> pb.Job:
        response = await self.stub.GetGeneration(
            pb.GetGenerationRequest(owner_id=str(owner), job_id=job_id), timeout=CALL_TIMEOUT
        )
        job: pb.Job = response.job
        return job

    async def outcome(self, owner: uuid.UUID, job_id: str) -> pb.JobOutcome:
        """What the usage audit is told about the job: charged, refunded, with output."""
        response = await self.stub.ListJobOutcomes(
            pb.ListJobOutcomesRequest(owner_id=str(owner)), timeout=CALL_TIMEOUT
        )
        (found,) = [item for item in response.jobs if item.job_id == job_id]
        return found


async def error_of(call: Any) -> RemoteError:
    """Await a call that must fail, and decode its error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return from_rpc_error(error)
    raise AssertionError("the call succeeded")
