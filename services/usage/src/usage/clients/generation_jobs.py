"""The generation service's ``ListJobOutcomes``, as the audit's job source.

Pages through every job over gRPC with a deadline on each call. Protobuf stops
here: the audit receives :class:`~usage.domain.model.JobFacts`.
"""

from __future__ import annotations

from datetime import UTC

import grpc

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.errors import UpstreamError
from kit.grpc_client import create_channel, outgoing_metadata
from kit.grpc_errors import from_rpc_error
from kit.ids import parse_uuid
from kit.logging import get_logger
from kit.service_identity import GENERATION, TokenSigner
from usage.domain.model import JobFacts, JobState

log = get_logger("usage.generation_client")

_STATES = {
    generation_pb2.JOB_STATUS_STARTING: JobState.STARTING,
    generation_pb2.JOB_STATUS_PROCESSING: JobState.PROCESSING,
    generation_pb2.JOB_STATUS_SUCCEEDED: JobState.SUCCEEDED,
    generation_pb2.JOB_STATUS_FAILED: JobState.FAILED,
    generation_pb2.JOB_STATUS_CANCELED: JobState.CANCELED,
}
# A runaway pager (a token that never ends) must not loop forever.
_MAX_PAGES = 100_000


def job_facts(outcome: generation_pb2.JobOutcome) -> JobFacts:
    """Maps one ``JobOutcome``; UPSTREAM_ERROR for a malformed one."""
    try:
        job_id, owner_id = parse_uuid(outcome.job_id), parse_uuid(outcome.owner_id)
    except ValueError:
        raise UpstreamError("The generation service sent a malformed job.") from None
    return JobFacts(
        job_id=job_id,
        owner_id=owner_id,
        status=_STATES.get(outcome.status, JobState.UNKNOWN),
        created_at=outcome.created_at.ToDatetime(tzinfo=UTC),
        has_output=outcome.has_output,
        charged=outcome.charged,
        refunded=outcome.refunded,
        waived=outcome.waived,
    )


class GenerationJobOutcomes:
    """Lists jobs from the generation service; the channel opens on first use."""

    def __init__(
        self,
        target: str,
        timeout_seconds: float,
        page_size: int,
        *,
        signer: TokenSigner | None = None,
    ) -> None:
        self._target = target
        self._signer = signer
        self._timeout = timeout_seconds
        self._page_size = page_size
        self._channel: grpc.aio.Channel | None = None

    async def list_all(self) -> list[JobFacts]:
        """Every job, all pages."""
        if self._channel is None:
            self._channel = create_channel(self._target, signer=self._signer, audience=GENERATION)
        stub = generation_pb2_grpc.GenerationServiceStub(self._channel)
        jobs: list[JobFacts] = []
        token = ""
        for _ in range(_MAX_PAGES):
            request = generation_pb2.ListJobOutcomesRequest(
                page_size=self._page_size, page_token=token
            )
            try:
                page = await stub.ListJobOutcomes(
                    request, timeout=self._timeout, metadata=outgoing_metadata()
                )
            except grpc.aio.AioRpcError as error:
                remote = from_rpc_error(error)
                log.warning("audit.jobs_unavailable", code=remote.code, grpcCode=error.code().name)
                raise UpstreamError("The generation service could not list jobs.") from None
            jobs.extend(job_facts(outcome) for outcome in page.jobs)
            if not page.next_page_token:
                return jobs
            token = page.next_page_token
        raise UpstreamError("The generation service's job list did not end.")

    async def close(self) -> None:
        """Closes the channel, if it was opened."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
