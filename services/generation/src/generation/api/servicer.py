"""The GenerationService servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from generation.api import mappers
from generation.api.intake import received_submission
from generation.domain import audit, queries
from generation.domain.context import GenerationContext
from generation.domain.events import apply_prediction
from generation.domain.provider import InvalidProviderPayload
from generation.domain.submission import submit_generation
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.errors import ValidationError
from kit.service_identity import EDGE_API, OPERATOR, USAGE, WEBHOOK_GATEWAY

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_EVENT_BYTES = 1024 * 1024

# Who may call each method (service identity; a method missing here is denied).
# Provider results come only through the gateway, which checked their signature.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "SubmitGeneration": frozenset({EDGE_API}),
    "GetGeneration": frozenset({EDGE_API}),
    "CancelGeneration": frozenset({EDGE_API}),
    "DeleteGeneration": frozenset({EDGE_API}),
    "ApplyProviderEvent": frozenset({WEBHOOK_GATEWAY}),
    "ListJobOutcomes": frozenset({USAGE, OPERATOR}),
}


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, ctx: GenerationContext) -> None:
        self._ctx = ctx

    async def SubmitGeneration(
        self, request_iterator: AsyncIterator[pb.SubmitGenerationPart], context: Context
    ) -> pb.SubmitGenerationResponse:
        async with received_submission(request_iterator, self._ctx.config.uploads) as command:
            result = await submit_generation(self._ctx, command)
        return pb.SubmitGenerationResponse(
            job=mappers.plain_job_message(result.job), replayed=result.replayed
        )

    async def GetGeneration(
        self, request: pb.GetGenerationRequest, context: Context
    ) -> pb.GetGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        view = await queries.get_generation(
            self._ctx, owner_id, mappers.job_id_from(request.job_id)
        )
        return pb.GetGenerationResponse(job=mappers.job_message(view))

    async def CancelGeneration(
        self, request: pb.CancelGenerationRequest, context: Context
    ) -> pb.CancelGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        view = await queries.cancel_generation(
            self._ctx, owner_id, mappers.job_id_from(request.job_id)
        )
        return pb.CancelGenerationResponse(job=mappers.job_message(view))

    async def DeleteGeneration(
        self, request: pb.DeleteGenerationRequest, context: Context
    ) -> pb.DeleteGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        view = await queries.delete_generation(
            self._ctx, owner_id, mappers.job_id_from(request.job_id)
        )
        return pb.DeleteGenerationResponse(job=mappers.job_message(view))

    async def ApplyProviderEvent(
        self, request: pb.ApplyProviderEventRequest, context: Context
    ) -> pb.ApplyProviderEventResponse:
        if len(request.payload) > _MAX_EVENT_BYTES:
            raise ValidationError("The event is too large.")
        try:
            prediction = self._ctx.provider.parse_event(request.payload)
        except InvalidProviderPayload:
            raise ValidationError("The event is not a prediction.") from None
        outcome, job = await apply_prediction(self._ctx, prediction, source="webhook")
        return pb.ApplyProviderEventResponse(
            outcome=mappers.outcome_message(outcome),
            job_id=str(job.id) if job else "",
            status=mappers.status_message(job.status) if job else pb.JOB_STATUS_UNSPECIFIED,
        )

    async def ListJobOutcomes(
        self, request: pb.ListJobOutcomesRequest, context: Context
    ) -> pb.ListJobOutcomesResponse:
        owner_id = mappers.owner_id_from(request.owner_id) if request.owner_id else None
        try:
            after = uuid.UUID(request.page_token) if request.page_token else None
        except ValueError:
            raise ValidationError("page_token is not valid.") from None
        outcomes, next_after = await audit.list_job_outcomes(
            self._ctx, owner_id, after, request.page_size
        )
        return pb.ListJobOutcomesResponse(
            jobs=[mappers.outcome_entry(item) for item in outcomes],
            next_page_token=str(next_after) if next_after else "",
        )
