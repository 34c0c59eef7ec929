"""The gRPC client side: hands verified events to the generation service."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.grpc_client import create_channel, outgoing_metadata
from kit.service_identity import GENERATION, TokenSigner

GENERATION_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name

_OUTCOMES = {
    generation_pb2.EVENT_OUTCOME_APPLIED: "applied",
    generation_pb2.EVENT_OUTCOME_UNKNOWN_PREDICTION: "unknown_prediction",
    generation_pb2.EVENT_OUTCOME_STALE: "stale",
}


@dataclass(frozen=True)
class ForwardResult:
    """What generation did with the event."""

    outcome: str
    job_id: str
    # The job's status after the event, lower case (`succeeded`), or "" when unknown.
    status: str


class EventRejected(Exception):
    """Generation could not read the payload (INVALID_ARGUMENT): a retry will not help."""


class ForwardFailed(Exception):
    """Generation was unreachable, too slow or failed: the provider should retry."""

    def __init__(self, grpc_code: str) -> None:
        super().__init__(grpc_code)
        self.grpc_code = grpc_code


class GenerationForwarder:
    """Owns the channel to generation; opened and closed by the app's lifespan."""

    def __init__(
        self,
        target: str,
        *,
        deadline_seconds: float,
        max_message_bytes: int,
        signer: TokenSigner | None = None,
    ) -> None:
        self._target = target
        self._signer = signer
        self._deadline = deadline_seconds
        self._max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stub: generation_pb2_grpc.GenerationServiceAsyncStub | None = None

    async def open(self) -> None:
        """Create the channel (it connects lazily, so a down generation does not block start)."""
        self._channel = create_channel(
            self._target, self._max_message_bytes, signer=self._signer, audience=GENERATION
        )
        self._stub = generation_pb2_grpc.GenerationServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None

    async def apply_event(
        self, payload: bytes, delivery_id: str, job_id: str = ""
    ) -> ForwardResult:
        """ApplyProviderEvent with a deadline and the request id; ``job_id`` is the job
        the webhook's URL names, as received (generation checks it)."""
        if self._stub is None:
            raise ForwardFailed("NOT_CONNECTED")
        request = generation_pb2.ApplyProviderEventRequest(
            payload=payload, delivery_id=delivery_id, job_id=job_id
        )
        try:
            response = await self._stub.ApplyProviderEvent(
                request, timeout=self._deadline, metadata=outgoing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise EventRejected from None
            raise ForwardFailed(error.code().name) from None
        except grpc.aio.BaseError as error:
            # e.g. the channel was closed under the call during shutdown.
            raise ForwardFailed(type(error).__name__) from None
        outcome = _OUTCOMES.get(response.outcome)
        if outcome is None:
            # OK without a known outcome breaks the contract; let the provider retry.
            raise ForwardFailed("OK_WITHOUT_OUTCOME")
        return ForwardResult(outcome, response.job_id, _status_name(response.status))

    async def is_serving(self, deadline_seconds: float) -> bool:
        """True when generation's standard health check answers SERVING in time."""
        if self._channel is None:
            return False
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            answer = await stub.Check(
                health_pb2.HealthCheckRequest(service=GENERATION_SERVICE),
                timeout=deadline_seconds,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _status_name(status: generation_pb2.JobStatus.ValueType) -> str:
    if status == generation_pb2.JOB_STATUS_UNSPECIFIED:
        return ""
    return generation_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()
