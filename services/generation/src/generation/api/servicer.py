"""The GenerationService servicer: protobuf in, domain call, protobuf out."""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from generation.api import mappers
from generation.api.intake import EarlyRefusal, received_submission
from generation.domain import audit, commands, history, queries
from generation.domain.changes import (
    FeedLost,
    FeedMark,
    JobChangeRef,
    JobFeed,
    SubscriberTooSlow,
)
from generation.domain.context import GenerationContext
from generation.domain.events import apply_prediction, parse_event, submission_traceparent
from generation.domain.jobs import JobView
from generation.domain.presentation import signed_inputs
from generation.domain.provider import (
    Deadline,
    ProviderError,
    provider_deadline,
)
from generation.domain.submission import early_answer, submit_generation
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit import tracing
from kit.errors import ServiceUnavailable, TooManyRequests, ValidationError
from kit.grpc_interceptors import STOP_SENDING
from kit.ids import parse_uuid
from kit.service_identity import EDGE_API, OPERATOR, USAGE, WEBHOOK_GATEWAY
from kit.slots import Slots
from kit.storage import StorageError
from kit.wire import FEED_MARKS_WITHIN

Context = grpc.aio.ServicerContext[Any, Any]
# Kept back from the caller's deadline so a provider call that runs out of time
# still leaves room to end the job cleanly (fail it, free the slot) and answer.
PROVIDER_DEADLINE_MARGIN_SECONDS = 3.0


def _age_ms(mark: FeedMark) -> int:
    """How long ago ``mark`` was taken, in whole milliseconds (as a uint32 holds it)."""
    elapsed = asyncio.get_running_loop().time() - mark.taken_at
    return min(max(0, math.ceil(elapsed * 1000)), 2**32 - 1)


def _provider_deadline_of(context: Context) -> Deadline | None:
    """The caller's gRPC deadline less the margin; None when the caller set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return Deadline.after(remaining - PROVIDER_DEADLINE_MARGIN_SECONDS)


# Who may call each method (service identity; a method missing here is denied).
# Provider results come only through the gateway, which checked their signature.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "SubmitGeneration": frozenset({EDGE_API}),
    "GetGeneration": frozenset({EDGE_API}),
    "CancelGeneration": frozenset({EDGE_API}),
    "DeleteGeneration": frozenset({EDGE_API}),
    "ListGenerations": frozenset({EDGE_API}),
    # The change feed names every owner's jobs: only the edge follows it (and reads the
    # jobs it watches when it cannot trust it for a moment).
    "WatchJobs": frozenset({EDGE_API}),
    "GetJobs": frozenset({EDGE_API}),
    "ApplyProviderEvent": frozenset({WEBHOOK_GATEWAY}),
    "ListJobOutcomes": frozenset({USAGE, OPERATOR}),
}


# What a servicer built without its own (tests) allows: no practical limit.
_UNLIMITED = Slots("generation.submissions", limit=2**16, wait_seconds=1.0, retry_after_seconds=1)


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, ctx: GenerationContext, feed: JobFeed, slots: Slots = _UNLIMITED) -> None:
        self._ctx = ctx
        self._feed = feed
        self._slots = slots

    def _shown(self, view: JobView) -> pb.Job:
        """A job as its owner sees it: with signed links to their inputs."""
        return mappers.job_message(view, signed_inputs(self._ctx, view))

    async def SubmitGeneration(
        self, request_iterator: AsyncIterator[pb.SubmitGenerationPart], context: Context
    ) -> pb.SubmitGenerationResponse:
        early = EarlyRefusal(
            answer=functools.partial(early_answer, self._ctx),
            stop_sending=functools.partial(context.send_initial_metadata, STOP_SENDING),
        )
        uploads = self._ctx.config.uploads
        async with received_submission(request_iterator, uploads, early, self._slots) as command:
            with provider_deadline(_provider_deadline_of(context)):
                result = await submit_generation(self._ctx, command)
        job = self._shown(result.job)
        return pb.SubmitGenerationResponse(job=job, replayed=result.replayed)

    async def GetGeneration(
        self, request: pb.GetGenerationRequest, context: Context
    ) -> pb.GetGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        with provider_deadline(_provider_deadline_of(context)):
            view = await queries.get_generation(
                self._ctx, owner_id, mappers.job_id_from(request.job_id)
            )
        return pb.GetGenerationResponse(job=self._shown(view))

    async def CancelGeneration(
        self, request: pb.CancelGenerationRequest, context: Context
    ) -> pb.CancelGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        with provider_deadline(_provider_deadline_of(context)):
            view = await commands.cancel_generation(
                self._ctx, owner_id, mappers.job_id_from(request.job_id)
            )
        return pb.CancelGenerationResponse(job=self._shown(view))

    async def DeleteGeneration(
        self, request: pb.DeleteGenerationRequest, context: Context
    ) -> pb.DeleteGenerationResponse:
        owner_id = mappers.owner_id_from(request.owner_id)
        with provider_deadline(_provider_deadline_of(context)):
            view = await commands.delete_generation(
                self._ctx, owner_id, mappers.job_id_from(request.job_id)
            )
        return pb.DeleteGenerationResponse(job=self._shown(view))

    async def ListGenerations(
        self, request: pb.ListGenerationsRequest, context: Context
    ) -> pb.ListGenerationsResponse:
        page = await history.list_generations(
            self._ctx,
            mappers.owner_id_from(request.owner_id),
            mappers.status_filter_from(request.status),
            request.page_size,
            request.page_token,
        )
        return pb.ListGenerationsResponse(
            jobs=[self._shown(view) for view in page.jobs],
            next_page_token=page.next_token,
        )

    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        owner_id = mappers.owner_id_from(request.owner_id) if request.owner_id else None
        # Replayed changes carry no job: a follower that resumes cannot trust what it
        # kept and reads what it needs once caught up, so up to REPLAY_SLACK reads per
        # resume would be thrown away.
        live = False
        if request.heartbeats:
            # Said before the database is asked anything: a follower that hears
            # nothing, not even a mark, for longer than this may take the stream for dead.
            marks_within = f"{self._feed.marks_within:g}"
            await context.send_initial_metadata(((FEED_MARKS_WITHIN, marks_within),))
        followed = self._feed.follow(owner_id, request.from_version, request.heartbeats)
        try:
            # Closed with the stream (a client gone, a deadline): its subscription too.
            async with aclosing(followed):
                async for item in followed:
                    if isinstance(item, FeedMark):
                        live = True
                        yield pb.WatchJobsResponse(
                            caught_up=item.version, mark_age_ms=_age_ms(item)
                        )
                        continue
                    shown = await self._views_of(item) if request.with_jobs and live else {}
                    for ref in item:
                        change = mappers.change_message(ref)
                        if (view := shown.get(ref.job_id)) is not None:
                            change.job.CopyFrom(view)
                        yield pb.WatchJobsResponse(change=change)
        # Mapped to their statuses (UNAVAILABLE, RESOURCE_EXHAUSTED) by the one interceptor;
        # either way the follower resumes from its last version, here or elsewhere.
        except FeedLost:
            raise ServiceUnavailable("The change feed was interrupted.") from None
        except SubscriberTooSlow:
            raise TooManyRequests("The reader fell behind.") from None

    async def GetJobs(self, request: pb.GetJobsRequest, context: Context) -> pb.GetJobsResponse:
        views = await queries.load_views(self._ctx, mappers.job_ids_from(request.job_ids))
        return pb.GetJobsResponse(jobs=[self._shown(view) for view in views.values()])

    async def _views_of(self, batch: Sequence[JobChangeRef]) -> dict[uuid.UUID, pb.Job]:
        """The views of a batch's jobs as GetGeneration shows them, read now (once for
        every watcher the follower serves, once for a whole burst): a view read now
        already shows the job's later changes, so each of its changes carries it (one
        commit often makes several: a success also inserts its render, which bumps the
        version again). A job gone is left out."""
        views = await queries.load_views(self._ctx, list({ref.job_id for ref in batch}))
        return {job_id: self._shown(view) for job_id, view in views.items()}

    async def ApplyProviderEvent(
        self, request: pb.ApplyProviderEventRequest, context: Context
    ) -> pb.ApplyProviderEventResponse:
        prediction = parse_event(self._ctx, request.payload)
        with (
            tracing.linked_span(
                "generation.apply_webhook", await self._submission_trace(prediction.id)
            ),
            provider_deadline(_provider_deadline_of(context)),
        ):
            try:
                outcome, job = await apply_prediction(
                    self._ctx,
                    prediction,
                    source="webhook",
                    named_job=mappers.named_job_from(request.job_id),
                )
            except (ProviderError, StorageError):
                # The outputs could not be copied now (logged as job.assets_deferred):
                # retryable, not a bug, so the provider's retry of the webhook comes.
                raise ServiceUnavailable() from None
        return pb.ApplyProviderEventResponse(
            outcome=mappers.outcome_message(outcome),
            job_id=str(job.id) if job else "",
            status=mappers.status_message(job.status) if job else pb.JOB_STATUS_UNSPECIFIED,
        )

    async def _submission_trace(self, prediction_id: str) -> str | None:
        """The traceparent stored with the prediction's job; read only when tracing."""
        if not tracing.enabled():
            return None
        return await submission_traceparent(self._ctx, prediction_id)

    async def ListJobOutcomes(
        self, request: pb.ListJobOutcomesRequest, context: Context
    ) -> pb.ListJobOutcomesResponse:
        owner_id = mappers.owner_id_from(request.owner_id) if request.owner_id else None
        try:
            after = parse_uuid(request.page_token) if request.page_token else None
        except ValueError:
            raise ValidationError("page_token is not valid.") from None
        outcomes, next_after = await audit.list_job_outcomes(
            self._ctx, owner_id, after, request.page_size
        )
        return pb.ListJobOutcomesResponse(
            jobs=[mappers.outcome_entry(item) for item in outcomes],
            next_page_token=str(next_after) if next_after else "",
        )
