"""An upload whose first bytes prove it refused is answered without the rest of it.

Generation screens each input's first 64 KiB as it arrives; when they prove a 415, it
answers in the documented order (fields 400, then 409 / 402, then the 415) and asks
the edge to stop sending, so a 9 MB hostile body is not streamed on. Counted here: the
chunk bytes generation's intake read from the edge's stream, stored or drained.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from generation.api import intake, servicer
from generation.domain.submit_request import SubmitCommand
from interior.generation.v1 import generation_pb2 as pb
from kit.runtime_config import Uploads
from tests.badinput import hostile
from tests.badinput.checks import assert_error, assert_nothing_left
from tests.e2e.harness import Stack, User

FILL_JPEG = hostile.jpeg_with_fill(9_000_000)
# The edge stops once the answer reaches it; by then it has written what gRPC's flow
# control let through meanwhile (the window grows with BDP probing: 2.5 MiB in a quiet
# run, 4.5 MiB under a loaded full suite). Without the early answer it sends all 9 MB.
STOPPED_EARLY = len(FILL_JPEG) * 3 // 4


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Chunk bytes each SubmitGeneration stream delivered to generation (one per call)."""
    counts: list[int] = []
    receive = intake.received_submission

    def counting(
        parts: AsyncIterator[pb.SubmitGenerationPart], uploads: Uploads, *args: object
    ) -> AbstractAsyncContextManager[SubmitCommand]:
        counts.append(0)
        index = len(counts) - 1

        async def counted() -> AsyncIterator[pb.SubmitGenerationPart]:
            async for part in parts:
                counts[index] += len(part.chunk.data)
                yield part

        return receive(counted(), uploads, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(servicer, "received_submission", counting)
    return counts


async def test_a_hostile_upload_is_refused_without_streaming_it_on(
    stack: Stack, user: User, streamed: list[int]
) -> None:
    refused = await user.submit("redesign", images=[FILL_JPEG])
    assert_error(refused, 415, "VALIDATION_ERROR")
    assert len(streamed) == 1, streamed
    assert streamed[0] < STOPPED_EARLY, streamed
    await assert_nothing_left(stack, user)


async def test_a_photo_is_streamed_whole(stack: Stack, user: User, streamed: list[int]) -> None:
    photo = hostile.encode(hostile.noise(1200, 900), "JPEG", quality=95)
    accepted = await user.submit("redesign", images=[photo])
    assert accepted.status_code == 202, accepted.text
    assert streamed == [len(photo)]
    await user.wait_for(accepted.json()["id"], {"succeeded"})


async def test_an_early_refusal_keeps_the_in_flight_refusal_first(
    stack: Stack, user: User, streamed: list[int]
) -> None:
    await stack.control("set_faults", hold=True)  # the first job stays in flight
    first = await user.submit("imagine", prompt="A calm reading nook")
    assert first.status_code == 202
    refused = await user.submit("redesign", images=[FILL_JPEG])
    assert_error(refused, 409, "TOO_MANY_INFLIGHT")
    assert streamed[-1] < STOPPED_EARLY, streamed
    await user.cancel(first.json()["id"])


async def test_an_early_refusal_keeps_the_field_and_quota_refusals_first(
    stack: Stack, user: User, streamed: list[int]
) -> None:
    await stack.set_plan(user.id, "price_test_one")
    first = await user.submit("imagine", prompt="A sunlit attic")
    assert first.status_code == 202
    await user.wait_for(first.json()["id"], {"succeeded"})
    assert_error(await user.submit("redesign", images=[FILL_JPEG]), 402, "LIMIT_EXCEEDED")
    bad_field = await user.submit("redesign", images=[FILL_JPEG], style="nope")
    assert_error(bad_field, 400, "VALIDATION_ERROR")
    assert all(count < STOPPED_EARLY for count in streamed[1:]), streamed


async def test_a_used_idempotency_key_is_judged_on_the_whole_request(
    stack: Stack, user: User, streamed: list[int]
) -> None:
    first = await user.submit("imagine", prompt="A quiet study", key="early-key-1")
    assert first.status_code == 202
    await user.wait_for(first.json()["id"], {"succeeded"})
    reused = await user.submit("redesign", images=[FILL_JPEG], key="early-key-1")
    assert_error(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    assert streamed[-1] == len(FILL_JPEG)  # the fingerprint needs every byte
