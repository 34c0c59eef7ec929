"""The generation servicer hands the caller's gRPC deadline down to provider retries."""

from __future__ import annotations

from datetime import timedelta

from generation.api.servicer import PROVIDER_DEADLINE_MARGIN_SECONDS
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.grpc_client import create_channel
from tests.e2e.harness import Stack, User, jpeg_bytes


async def _get_over_grpc(stack: Stack, user: User, job_id: str, timeout: float) -> str:
    channel = create_channel(f"127.0.0.1:{stack.generation.server.port}")
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        request = generation_pb2.GetGenerationRequest(owner_id=str(user.id), job_id=job_id)
        response = await stub.GetGeneration(request, timeout=timeout)
    finally:
        await channel.close()
    return str(response.job.id)


async def _gets_left(stack: Stack) -> int:
    return len((await stack.control("faults"))["get_errors"])


async def test_a_refresh_retries_only_while_the_callers_deadline_allows(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    submitted = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    await stack.control("set_faults", get_errors=[503, 503, 503, 503])

    # Half a second past the margin: room for one attempt, none for a retry.
    stack.clock.advance(timedelta(seconds=6))
    answered = await _get_over_grpc(stack, user, job_id, PROVIDER_DEADLINE_MARGIN_SECONDS + 0.5)
    assert answered == job_id
    assert await _gets_left(stack) == 3

    # A patient caller: the retry policy alone limits the attempts (four).
    stack.clock.advance(timedelta(seconds=6))
    await _get_over_grpc(stack, user, job_id, 30.0)
    assert await _gets_left(stack) == 0
