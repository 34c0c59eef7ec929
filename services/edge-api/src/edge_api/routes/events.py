"""GET /generations/{id}/events: a job followed live, as Server-Sent Events.

Each message is ``id: <version>``, ``event: job`` and ``data: <the job JSON as GET
returns it>``. The first comes at once (unless ``Last-Event-ID`` already names the
current version), then one per change, woken by the edge's shared feed; after a
terminal status the stream ends. While the job runs it is read again every stale
interval, so generation's stale refresh applies and a lost webhook still shows. A
comment line goes out at least every ``SSE_HEARTBEAT_SECONDS``. Browsers'
``EventSource`` cannot send headers: ``access_token`` in the query works too (it is
never logged: the access log has no query string).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from edge_api.mappers import job_to_json
from edge_api.openapi import errors
from edge_api.routes import API_PREFIX
from edge_api.routes.generations import JobId, _job_id, public_base
from edge_api.state import EdgeState, State
from interior.generation.v1 import generation_pb2
from kit.errors import Unauthorized
from kit.grpc_client import outgoing_metadata
from kit.logging import bind_context

router = APIRouter(prefix=f"{API_PREFIX}/generations", tags=["generations"])

_TERMINAL = frozenset(
    {
        generation_pb2.JOB_STATUS_SUCCEEDED,
        generation_pb2.JOB_STATUS_FAILED,
        generation_pb2.JOB_STATUS_CANCELED,
    }
)
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_KEEPALIVE = b": keep-alive\n\n"


def _token(request: Request, access_token: str | None) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if access_token:
        return access_token
    raise Unauthorized()


def _already_sent(last_event_id: str | None, current: int) -> int:
    """The version the client has: its Last-Event-ID when it names one of this job's
    versions so far, else -1 (nothing: the current state goes out first)."""
    value = (last_event_id or "").strip()
    if value.isdigit() and len(value) < 19 and int(value) <= current:
        return int(value)
    return -1


@router.get(
    "/{job_id}/events",
    summary="Follow a generation live (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `id: <version>`, `event: job`, `data: <job "
            "JSON>` per change; ends after a terminal status; `:` comments keep it open.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors(401, 404, 500, 503),
    },
)
async def watch_generation(
    job_id: JobId,
    request: Request,
    state: State,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this version.")
    ] = None,
    access_token: Annotated[
        str | None,
        Query(description="The bearer token, for EventSource (which cannot send headers)."),
    ] = None,
) -> StreamingResponse:
    """The job now, then each change, until it is finished."""
    owner_id = (await state.token_verifier.caller(_token(request, access_token))).owner_id
    request.state.owner_id = owner_id
    bind_context(ownerId=owner_id)
    job_key = _job_id(job_id)
    first = await _read(state, owner_id, job_key)  # 401/404 answered as JSON, before the stream
    sent = _already_sent(last_event_id, first.version)
    stream = _messages(state, owner_id, job_key, first, sent, public_base(state, request))
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)


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


async def _messages(
    state: EdgeState,
    owner_id: str,
    job_id: str,
    job: generation_pb2.Job,
    sent: int,
    base_url: str,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    heartbeat = state.settings.sse_heartbeat_seconds
    refresh = (
        state.settings.sse_refresh_seconds or state.runtime_config.timings.stale_after_ms / 1000
    )
    next_beat, next_read = loop.time() + heartbeat, loop.time() + refresh
    with state.feed.watch(job_id) as changed:
        while True:
            if job.version > sent:
                yield _message(job, base_url)
                sent = job.version
            if job.status in _TERMINAL:
                return
            # Only the job's leading watcher wakes for the timed read (JobFeed.leads); the
            # others sleep until their heartbeat, so an idle stream wakes once per beat.
            leads = state.feed.leads(job_id, changed)
            deadline = min(next_beat, next_read) if leads else next_beat
            woken = await _wait(changed, deadline - loop.time())
            now = loop.time()
            if now >= next_beat:
                yield _KEEPALIVE
                next_beat = now + heartbeat
            due = now >= next_read
            if due:
                next_read = now + refresh
            if woken or (due and state.feed.leads(job_id, changed)):
                job = await _read_again(state, owner_id, job_id, job)


async def _wait(signal: asyncio.Event, seconds: float) -> bool:
    """True when ``signal`` was set within ``seconds`` (and clears it)."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await signal.wait()
    except TimeoutError:
        return False
    signal.clear()
    return True


async def _read_again(
    state: EdgeState, owner_id: str, job_id: str, known: generation_pb2.Job
) -> generation_pb2.Job:
    """The job's current state; what was known when generation cannot answer now."""
    try:
        return await _read(state, owner_id, job_id)
    except Exception:  # a stream outlives a generation restart: the next read may work
        return known
