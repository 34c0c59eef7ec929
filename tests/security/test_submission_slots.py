"""Generation's own cap on submissions at once (api/slots.py), on the real stack.

Every edge replica caps what it forwards, but one generation instance can be sent the
sum of all of them: each submission spools its inputs on the instance's disk, so past
its cap an instance refuses (after a short wait) before reading a byte, and the edge
answers 429 with Retry-After. Nothing of a refused submission is left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from PIL import Image

from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_client import create_channel
from kit.service_identity import EDGE_API, GENERATION
from testkit.plugin import S3Endpoint
from testkit.stack import Stack, in_process_stack
from tests.badinput.checks import assert_nothing_left
from tests.e2e.conftest import _options
from tests.e2e.harness import User, jpeg_bytes


@pytest.fixture(scope="module")
async def stack(
    database_factory: Callable[[str], str],
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    options = _options(tmp_path_factory.mktemp("slot-keys"), s3_server)
    generation = {
        **options.generation,
        "GENERATION_MAX_CONCURRENT_SUBMISSIONS": 1,
        "GENERATION_SUBMISSION_SLOT_WAIT_SECONDS": 0.3,
    }
    options = dataclasses.replace(options, generation=generation)
    async with in_process_stack(options, database_factory, s3_server) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def _photo(pixels_megabytes: float) -> bytes:
    """A noisy JPEG (about 0.4 bytes per raw byte): larger than an HTTP/2 flow-control
    window, so the edge is still writing when a refusal is decided."""
    side = int((pixels_megabytes * 1024 * 1024 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def test_a_full_instance_refuses_with_429_and_keeps_nothing(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    holder, user, writer = User(stack, http), User(stack, http), User(stack, http)
    image, photo = jpeg_bytes(), _photo(8)
    assert len(photo) > 2 * 1024 * 1024
    slots = stack.generation.slots
    release = asyncio.Event()

    async def held_parts() -> AsyncIterator[pb.SubmitGenerationPart]:
        # Another submission, its upload under way: it holds the instance's one slot.
        yield pb.SubmitGenerationPart(
            request=pb.SubmitGenerationRequest(
                owner_id=str(holder.id),
                mode="redesign",
                inputs=[pb.DeclaredInput(field="input1", size_bytes=len(image))],
                request_base_url="http://edge.test",
            )
        )
        await release.wait()
        yield pb.SubmitGenerationPart(chunk=pb.InputChunk(input_index=0, data=image))

    channel = create_channel(
        f"127.0.0.1:{stack.generation.server.port}",
        signer=stack.signer(EDGE_API),
        audience=GENERATION,
    )
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        held = asyncio.ensure_future(stub.SubmitGeneration(held_parts(), timeout=30))
        await _until(lambda: slots.held == 1)

        # Refused before a byte is stored, and answered as a refusal (429, not a reset
        # the edge would turn into a 500), however much the edge was still sending.
        for upload in (photo, image):
            refused = await user.submit("redesign", images=[upload], style="japandi")
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "TOO_MANY_REQUESTS"
            assert "retryAfterSeconds" not in refused.json()["error"]
        await assert_nothing_left(stack, user)
        assert slots.held == 1
        # Words alone spool nothing: no slot needed.
        accepted = await writer.submit("imagine", prompt="a bright loft")
        assert accepted.status_code == 202, accepted.text

        release.set()
        answer = await held
        assert answer.job.owner_id == str(holder.id)
        await _until(lambda: slots.held == 0)
        accepted = await user.submit("redesign", images=[photo], style="japandi")
        assert accepted.status_code == 202, accepted.text
        assert slots.held == 0
    finally:
        release.set()
        await channel.close()


async def test_a_slot_is_freed_once_the_inputs_are_stored(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """A slow provider create must not keep the slot: the spools it guards are gone
    once the inputs are in storage, and the next upload is taken meanwhile."""
    first, second = User(stack, http), User(stack, http)
    slots = stack.generation.slots
    await stack.control("reset")  # no prediction of an earlier test
    await stack.control("set_faults", create_answer_delay_ms=2500)
    try:
        slow = asyncio.ensure_future(
            first.submit("redesign", images=[jpeg_bytes()], style="japandi")
        )
        # Its create reached the provider (its inputs stored), and waits for an answer.
        await _until(lambda: len(stack.emulator.control.predictions()) == 1)
        assert not slow.done()
        assert slots.held == 0
        await stack.control("set_faults", create_answer_delay_ms=0)
        taken = await second.submit("redesign", images=[jpeg_bytes()], style="japandi")
        assert taken.status_code == 202, taken.text
        assert (await slow).status_code == 202
    finally:
        await stack.control("reset")
