"""GET /generations/{id}/events: a job followed live, as Server-Sent Events.

Each message is ``id: <version>``, ``event: job`` and ``data: <the job JSON as GET
returns it>``. The first comes at once (unless ``Last-Event-ID`` already names the
current version), then one per change, woken by the edge's shared feed; after a
terminal status the stream ends. Written by edge_api.sse's lean response: a quiet
stream holds no timer and no task of its own beyond its disconnect listener.
While the job runs it is read again every stale interval, so generation's stale
refresh applies and a lost webhook still shows. A comment line goes out at least
every ``SSE_HEARTBEAT_SECONDS``. Browsers' ``EventSource`` cannot send headers:
``access_token`` in the query works too (it is never logged: the access log has no
query string). Nothing is sent on a token past its expiry (its ``exp`` plus the
leeway), as a request with it would then be refused: a stream woken after that ends
instead, and a quiet one at its next heartbeat (the shared ticker's, so no timer per
stream). ``EventSource`` reconnects, gets the 401, and the page signs in again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from edge_api.auth import StreamAuthenticated
from edge_api.mappers import job_to_json
from edge_api.openapi import errors
from edge_api.routes import API_PREFIX
from edge_api.routes.params import JobId, canonical_job_id, public_base
from edge_api.settled import SETTLED
from edge_api.sse import (
    BEAT,
    CHANGED,
    GONE,
    REFRESH,
    STOPPING,
    EventStreamResponse,
    Watch,
    Write,
)
from edge_api.state import EdgeState, State
from interior.generation.v1 import generation_pb2
from kit.grpc_client import outgoing_metadata
from kit.logging import get_logger

log = get_logger("edge_api.events")
router = APIRouter(prefix=f"{API_PREFIX}/generations", tags=["generations"])

_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_KEEPALIVE = b": keep-alive\n\n"
_EXPIRED = b": the access token expired\n\n"


def _already_sent(last_event_id: str | None, current: int) -> int:
    """The version the client has: its Last-Event-ID when it names one of this job's
    versions so far, else -1 (nothing: the current state goes out first)."""
    value = (last_event_id or "").strip()
    # isdigit alone admits superscripts and other scripts' digits, which int() refuses.
    if value.isascii() and value.isdigit() and len(value) < 19 and int(value) <= current:
        return int(value)
    return -1


@router.get(
    "/{job_id}/events",
    summary="Follow a generation live (Server-Sent Events)",
    # For the OpenAPI document only (the media type); the route returns its own response.
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `id: <version>`, `event: job`, `data: <job "
            "JSON>` per change; ends after a terminal status; `:` comments keep it open.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        204: {
            "description": "The job is finished and `Last-Event-ID` names its current "
            "version: nothing more will come (an `EventSource` stops reconnecting)."
        },
        **errors(401, 404, 500, 503),
    },
)
async def watch_generation(
    job_id: JobId,
    request: Request,
    state: State,
    caller: StreamAuthenticated,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this version.")
    ] = None,
) -> Response:
    """The job now, then each change, until it is finished."""
    owner_id = caller.owner_id
    job_key = canonical_job_id(job_id)
    # Taken before the read: a catch-up of the feed between the read and the watch's
    # registration (which woke only the watchers registered by then) wakes this one too.
    epoch = state.feed.epoch
    first = await _read(state, owner_id, job_key)  # 401/404 answered as JSON, before the stream
    sent = _already_sent(last_event_id, first.version)
    if first.status in SETTLED and sent >= first.version:
        # Finished, and the client has seen its end: nothing to stream. 204 is what makes
        # an EventSource stop reconnecting; an empty stream would have it come back for
        # ever, every few seconds.
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    produce = _producer(
        state, owner_id, job_key, first, sent, public_base(state, request), caller.expires_at
    )
    return EventStreamResponse(
        lambda: state.feed.watch(job_key, first.version, epoch), produce, _STREAM_HEADERS
    )


async def _read(state: EdgeState, owner_id: str, job_id: str) -> generation_pb2.Job:
    reply = await state.connected().generation.GetGeneration(
        generation_pb2.GetGenerationRequest(owner_id=owner_id, job_id=job_id),
        timeout=state.rpc_timeout(),
        metadata=outgoing_metadata(),
    )
    return reply.job


def _message(job: generation_pb2.Job, base_url: str) -> bytes:
    data = job_to_json(job, base_url).model_dump_json(by_alias=True)
    return f"id: {job.version}\nevent: job\ndata: {data}\n\n".encode()


def _producer(
    state: EdgeState,
    owner_id: str,
    job_id: str,
    job: generation_pb2.Job,
    sent: int,
    base_url: str,
    expires_at: float,
) -> Callable[[Watch, Write], Awaitable[None]]:
    async def produce(watch: Watch, write: Write) -> None:
        nonlocal job, sent
        # A read that failed (generation restarting) is tried again at each heartbeat
        # until one works: only the job's leading watcher reads on a timer.
        read_due = False
        while True:
            if job.version > sent:
                # Checked as the message goes out (a read may have taken a while): nothing
                # more on a token no longer accepted.
                if time.time() >= expires_at:
                    await write(_EXPIRED)
                    return
                await write(_message(job, base_url))
                sent = job.version
            if job.status in SETTLED:
                return
            # The feed's ticker wakes every stream for its heartbeat and only the job's
            # reader for the timed read (feed._reader_of): one read per job.
            reasons = await watch.wait()
            if reasons & (GONE | STOPPING):
                return
            if time.time() >= expires_at:  # a quiet stream ends at its next heartbeat
                await write(_EXPIRED)
                return
            if reasons & BEAT:
                await write(_KEEPALIVE)
            news, watch.news = watch.news, None
            if reasons & REFRESH or (reasons & CHANGED and news is None) or read_due:
                known = job.version
                # The timed read: a slow one (generation polling a slow provider) keeps
                # the stream's heartbeats going meanwhile.
                heartbeat = state.feed.timings.heartbeat
                read = await _keeping_alive(_read_again(state, owner_id, job_id), write, heartbeat)
                read_due = read is None
                job = job if read is None or read.version < job.version else read
                if reasons & REFRESH and job.version > known:
                    state.feed.share(job_id, job, watch)
            elif news is not None and news.version > job.version:
                job = news  # carried by the feed: exactly what GetGeneration answers

    return produce


async def _keeping_alive(
    read: Coroutine[Any, Any, generation_pb2.Job | None], write: Write, heartbeat: float
) -> generation_pb2.Job | None:
    """``read``'s answer, with a comment written whenever it takes a heartbeat's time
    (less the ticker's margin: the read began after the stream's last write at most)."""
    pending = asyncio.ensure_future(read)
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=heartbeat * 0.9)
            if done:
                return pending.result()
            await write(_KEEPALIVE)
    finally:
        pending.cancel()


async def _read_again(state: EdgeState, owner_id: str, job_id: str) -> generation_pb2.Job | None:
    """The job's current state; None when generation cannot answer now."""
    try:
        return await _read(state, owner_id, job_id)
    except grpc.aio.AioRpcError as error:
        # A stream outlives a generation restart: the next read may work.
        log.info("sse.read_failed", grpcCode=error.code().name)
        return None
