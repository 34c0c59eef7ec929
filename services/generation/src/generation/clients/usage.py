"""The usage service over gRPC, as the generation domain's UsageGateway."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import TypeVar

import grpc
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from generation.domain.ports import QuotaSnapshot
from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.errors import LimitExceeded, UpstreamError, ValidationError
from kit.grpc_client import outgoing_metadata
from kit.grpc_errors import from_rpc_error
from kit.logging import get_logger

log = get_logger("generation.clients.usage")

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_Response = TypeVar("_Response")


def _transient(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _TRANSIENT


class GrpcUsageGateway:
    """Calls with a deadline each, retried a few times on transport failures only."""

    def __init__(
        self, channel: grpc.aio.Channel, *, timeout_seconds: float = 5.0, attempts: int = 3
    ) -> None:
        self._stub = usage_pb2_grpc.UsageServiceStub(channel)
        self._timeout = timeout_seconds
        self._attempts = attempts

    async def quota(
        self, owner_id: uuid.UUID, pending_job_ids: Sequence[uuid.UUID] = ()
    ) -> QuotaSnapshot:
        request = usage_pb2.GetQuotaRequest(
            owner_id=str(owner_id), pending_job_ids=[str(job) for job in pending_job_ids]
        )
        response = await self._call("GetQuota", self._stub.GetQuota, request)
        return QuotaSnapshot(
            remaining=response.remaining,
            period_end=response.period_end.ToDatetime(tzinfo=UTC),
            pending_counted=response.pending_jobs_counted,
        )

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        response = await self._call(
            "Debit",
            self._stub.Debit,
            usage_pb2.DebitRequest(
                owner_id=str(owner_id),
                job_id=str(job_id),
                idempotency_key=f"job:{job_id}:debit",
                reason="generation",
            ),
        )
        # Not recorded and not replayed: the job was settled without a charge.
        return response.recorded or response.replayed

    async def credit(self, owner_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> bool:
        response = await self._call(
            "Credit",
            self._stub.Credit,
            usage_pb2.CreditRequest(
                owner_id=str(owner_id),
                job_id=str(job_id),
                idempotency_key=f"job:{job_id}:refund",
                reason=reason,
            ),
        )
        # Not recorded and not replayed: the job was never debited.
        return response.recorded or response.replayed

    async def _call(
        self, method: str, rpc: Callable[..., Awaitable[_Response]], request: object
    ) -> _Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=1.0),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

        async def attempt() -> _Response:
            # Metadata per attempt: a retry carries a fresh identity token if it needs one.
            return await rpc(request, timeout=self._timeout, metadata=outgoing_metadata())

        try:
            return await retrying(attempt)
        except grpc.aio.AioRpcError as error:
            raise _domain_error(method, error) from error


def _domain_error(method: str, error: grpc.aio.AioRpcError) -> Exception:
    remote = from_rpc_error(error)
    if remote.code == LimitExceeded.code:
        return LimitExceeded(remote.message or None, **remote.details)
    if remote.code == ValidationError.code:
        return ValidationError(remote.message or None)
    log.warning("usage.call_failed", method=method, grpcCode=error.code().name, code=remote.code)
    return UpstreamError("The usage service is unavailable. Please try again.")
