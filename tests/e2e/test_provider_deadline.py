"""The generation servicer hands the caller's gRPC deadline down to provider retries
and to output downloads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import grpc
import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from generation.api.servicer import PROVIDER_DEADLINE_MARGIN_SECONDS
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.grpc_client import create_channel
from testkit.servers import ThreadedUvicorn
from tests.e2e.harness import Stack, User, jpeg_bytes

SHORT_SUBMIT_DEADLINE = PROVIDER_DEADLINE_MARGIN_SECONDS + 2.0
# An output host slower than the callers below wait (the emulator holds each download).
SLOW_OUTPUT_MS = 8_000


async def _get_over_grpc(stack: Stack, user: User, job_id: str, timeout: float) -> str:
    return (await _get_job(stack, user, job_id, timeout)).id


def _channel(stack: Stack, caller: str) -> grpc.aio.Channel:
    """A channel to generation as ``caller`` (its service identity) calls it."""
    return create_channel(
        f"127.0.0.1:{stack.generation.server.port}",
        signer=stack.signer(caller),
        audience="generation",
    )


async def _get_job(stack: Stack, user: User, job_id: str, timeout: float) -> generation_pb2.Job:
    channel = _channel(stack, "edge-api")
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.GetGenerationRequest(owner_id=str(user.id), job_id=job_id)
        response = await stub.GetGeneration(request, timeout=timeout)
    finally:
        await channel.close()
    return response.job


async def _deliver_over_grpc(stack: Stack, payload: bytes, timeout: float) -> grpc.StatusCode:
    """ApplyProviderEvent as the gateway calls it; the call's status code."""
    channel = _channel(stack, "webhook-gateway")
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.ApplyProviderEventRequest(payload=payload, delivery_id="msg_1")
        await stub.ApplyProviderEvent(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


async def _succeeded_without_webhook(stack: Stack, user: User) -> tuple[str, str]:
    """A job whose provider run succeeded, its webhooks lost: (job id, prediction id)."""
    await stack.control("set_faults", hold=True, drop_webhooks="all")
    submitted = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert submitted.status_code == 202, submitted.text
    job_id, prediction_id = submitted.json()["id"], submitted.json()["predictionId"]
    await stack.control("advance", prediction_id, "succeeded")
    return job_id, prediction_id


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


async def test_a_stale_get_whose_output_is_slow_answers_within_its_deadline(
    stack: Stack, user: User
) -> None:
    """The GET's refresh finds the run succeeded but cannot copy its output in time:
    the copy is deferred and the GET answers the job as it is (a GET never fails for
    provider trouble), instead of the edge's deadline cutting it off (a 503)."""
    job_id, _ = await _succeeded_without_webhook(stack, user)
    await stack.control("set_faults", output_delay_ms=SLOW_OUTPUT_MS)
    stack.clock.advance(timedelta(seconds=6))

    job = await _get_job(stack, user, job_id, PROVIDER_DEADLINE_MARGIN_SECONDS + 1.5)

    assert job.id == job_id
    # Its webhooks were lost: still as the submission left it.
    assert job.status == generation_pb2.JOB_STATUS_STARTING
    assert not job.variants


async def test_a_webhook_whose_output_is_slow_is_answered_unavailable_in_time(
    stack: Stack, user: User
) -> None:
    """The gateway's call gets a retryable UNAVAILABLE before its deadline (the provider
    then retries the webhook), neither cut off by the deadline nor an INTERNAL error."""
    job_id, prediction_id = await _succeeded_without_webhook(stack, user)
    await stack.control("set_faults", output_delay_ms=SLOW_OUTPUT_MS)
    payload = json.dumps(await stack.control("prediction", prediction_id)).encode()

    code = await _deliver_over_grpc(stack, payload, PROVIDER_DEADLINE_MARGIN_SECONDS + 1.5)

    assert code == grpc.StatusCode.UNAVAILABLE
    await stack.control("set_faults", output_delay_ms=0)
    assert await _deliver_over_grpc(stack, payload, 30.0) == grpc.StatusCode.OK
    assert (await user.get(job_id)).json()["status"] == "succeeded"
