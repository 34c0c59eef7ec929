"""The generation servicer hands the caller's gRPC deadline down to provider retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from generation.api.servicer import PROVIDER_DEADLINE_MARGIN_SECONDS
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.grpc_client import create_channel
from testkit.servers import ThreadedUvicorn
from tests.e2e.harness import Stack, User, jpeg_bytes

SHORT_SUBMIT_DEADLINE = PROVIDER_DEADLINE_MARGIN_SECONDS + 2.0


async def _get_over_grpc(stack: Stack, user: User, job_id: str, timeout: float) -> str:
    channel = create_channel(
        f"127.0.0.1:{stack.generation.server.port}",
        signer=stack.signer("edge-api"),
        audience="generation",
    )
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.GetGenerationRequest(owner_id=str(user.id), job_id=job_id)
        response = await stub.GetGeneration(request, timeout=timeout)
    finally:
        await channel.close()
    return str(response.job.id)


async def _left(stack: Stack, queue: str) -> int:
    return len((await stack.control("faults"))[queue])


@pytest.fixture
def impatient_edge(stack: Stack) -> Iterator[str]:
    """A second edge whose submit deadline leaves the provider two seconds."""
    settings = stack.edge_settings(GRPC_SUBMIT_DEADLINE_SECONDS=SHORT_SUBMIT_DEADLINE)
    edge = ThreadedUvicorn(create_edge_app(settings, stack.ctx.config), name="edge-impatient")
    edge.start()
    try:
        yield f"{edge.base_url}/api/v1"
    finally:
        edge.stop()


async def test_a_refresh_retries_only_while_the_callers_deadline_allows(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    submitted = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    # Held in processing: no later webhook moves the job (and its staleness) on.
    await user.wait_for(job_id, {"processing"})
    await stack.control("set_faults", get_errors=[503, 503, 503, 503])

    # Half a second past the margin: room for one attempt, none for a retry.
    stack.clock.advance(timedelta(seconds=6))
    answered = await _get_over_grpc(stack, user, job_id, PROVIDER_DEADLINE_MARGIN_SECONDS + 0.5)
    assert answered == job_id
    assert await _left(stack, "get_errors") == 3

    # A patient caller: the retry policy alone limits the attempts (four).
    stack.clock.advance(timedelta(seconds=6))
    await _get_over_grpc(stack, user, job_id, 30.0)
    assert await _left(stack, "get_errors") == 0


async def test_a_slow_failing_create_answers_502_before_the_edges_deadline(
    stack: Stack, user: User, http: httpx.AsyncClient, impatient_edge: str
) -> None:
    # Each create takes 1.5 s and fails: unbounded, four attempts would outlast
    # the edge's deadline and the user would get a 504 with the job still starting.
    await stack.control("set_faults", latency_ms=1500, create_errors=[503] * 8)

    response = await http.post(
        f"{impatient_edge}/generations",
        json={"mode": "imagine", "prompt": "A reading nook"},
        headers=user.headers,
    )

    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
    assert await _left(stack, "create_errors") >= 7
    assert (await user.usage())["used"] == 0
