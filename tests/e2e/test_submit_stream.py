"""SubmitGeneration as a client stream, against the real generation service.

Streams that break the contract's rules are refused with VALIDATION_ERROR and
leave nothing behind; an input declared too large is refused before its chunks
are read; a 10 MB photo goes through the edge, in chunks, to a stored input
that is exactly the metadata-free copy; idempotency still compares the bytes.
"""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from PIL import Image

from generation.api import intake
from generation.domain.image_strip import strip_jpeg
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_client import create_channel
from kit.grpc_errors import RemoteError, from_rpc_error
from kit.service_identity import EDGE_API, GENERATION
from testkit.recording import record_results
from tests.badinput.checks import assert_nothing_left
from tests.e2e.harness import Stack, User, jpeg_bytes, objects_under

CHUNK = 256 * 1024


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[generation_pb2_grpc.GenerationServiceAsyncStub]:
    channel = create_channel(
        f"127.0.0.1:{stack.generation.server.port}",
        signer=stack.signer(EDGE_API),
        audience=GENERATION,
    )
    try:
        yield generation_pb2_grpc.GenerationServiceStub(channel)
    finally:
        await channel.close()


def request_part(user: User, *sizes: int) -> pb.SubmitGenerationPart:
    return pb.SubmitGenerationPart(
        request=pb.SubmitGenerationRequest(
            owner_id=str(user.id),
            mode="redesign",
            inputs=[
                pb.DeclaredInput(field=f"input{i + 1}", size_bytes=s) for i, s in enumerate(sizes)
            ],
            request_base_url="http://edge.test",
        )
    )


def chunk_parts(index: int, data: bytes) -> Iterator[pb.SubmitGenerationPart]:
    for start in range(0, len(data), CHUNK):
        piece = data[start : start + CHUNK]
        yield pb.SubmitGenerationPart(chunk=pb.InputChunk(input_index=index, data=piece))


async def refusal(
    stub: generation_pb2_grpc.GenerationServiceAsyncStub, parts: list[pb.SubmitGenerationPart]
) -> RemoteError:
    async def stream() -> AsyncIterator[pb.SubmitGenerationPart]:
        for part in parts:
            yield part

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitGeneration(stream(), timeout=20)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return from_rpc_error(caught.value)


def broken_streams(user: User) -> dict[str, list[pb.SubmitGenerationPart]]:
    image = jpeg_bytes()
    return {
        "first part is a chunk": list(chunk_parts(0, image)),
        "undeclared input": [request_part(user, len(image)), *chunk_parts(1, image)],
        "more bytes than declared": [request_part(user, len(image) - 1), *chunk_parts(0, image)],
        "fewer bytes than declared": [request_part(user, len(image) + 1), *chunk_parts(0, image)],
    }


@pytest.mark.parametrize(
    "case",
    [
        "first part is a chunk",
        "undeclared input",
        "more bytes than declared",
        "fewer bytes than declared",
    ],
)
async def test_a_stream_breaking_the_rules_is_refused_and_stores_nothing(
    stack: Stack, user: User, stub: generation_pb2_grpc.GenerationServiceAsyncStub, case: str
) -> None:
    error = await refusal(stub, broken_streams(user)[case])
    assert (error.code, error.reason) == ("VALIDATION_ERROR", "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


async def test_inputs_must_come_under_the_names_their_mode_gives_them(
    stack: Stack, user: User, stub: generation_pb2_grpc.GenerationServiceAsyncStub
) -> None:
    """Generation checks the names itself (the edge does too): a redesign whose one
    image is declared as input2 is refused, not taken as input1 by its position."""
    image = jpeg_bytes()
    part = request_part(user, len(image))
    part.request.inputs[0].field = "input2"

    error = await refusal(stub, [part, *chunk_parts(0, image)])

    assert error.code == "VALIDATION_ERROR"
    assert error.message == "redesign needs one image of the room (input1)"
    await assert_nothing_left(stack, user)


async def test_an_oversize_input_is_refused_before_its_chunks_are_stored(
    stack: Stack,
    user: User,
    stub: generation_pb2_grpc.GenerationServiceAsyncStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = stack.ctx.config.uploads.max_bytes
    size = limit + CHUNK
    total = size // CHUNK + 1
    spools = record_results(monkeypatch, intake, "spooled_file")

    async def stream() -> AsyncIterator[pb.SubmitGenerationPart]:
        yield request_part(user, size)
        for _ in range(total):
            yield pb.SubmitGenerationPart(chunk=pb.InputChunk(input_index=0, data=bytes(CHUNK)))

    # Repeated: the refusal must reach the sender as sent every time, although the
    # service refuses before the sender is done writing (the rest is read and dropped).
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitGeneration(stream(), timeout=20)
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE")
        assert error.message == "input1 is larger than 10 MB"
    assert spools == []  # not one chunk was written anywhere
    await assert_nothing_left(stack, user)


def big_photo() -> bytes:
    """A ~9 MB JPEG (noise barely compresses) with EXIF (camera, GPS) and a comment."""
    rng = random.Random(11)
    picture = Image.frombytes("RGB", (2000, 1600), rng.randbytes(2000 * 1600 * 3))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x8825] = {1: "S", 2: (33.0, 52.0, 7.0)}
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=97, subsampling=0, exif=exif, comment=b"home")
    data = out.getvalue()
    assert 8_000_000 < len(data) <= 10_000_000, len(data)
    return data


async def test_a_10_mb_upload_is_stored_as_its_exact_stripped_copy(
    stack: Stack, user: User
) -> None:
    photo = big_photo()
    expected = io.BytesIO()
    assert strip_jpeg(io.BytesIO(photo), expected)
    assert b"SecretCam" not in expected.getvalue()

    response = await user.submit("redesign", images=[photo], key="big-upload")
    assert response.status_code == 202, response.text

    [key] = await objects_under(stack, "private", f"{user.id}/inputs/")
    stored = await stack.ctx.storage.get_bytes("private", key, max_bytes=len(photo))
    assert stored == expected.getvalue()
    await user.wait_for(response.json()["id"], {"succeeded"}, timeout=30)

    replay = await user.submit("redesign", images=[photo], key="big-upload")
    assert replay.status_code == 202, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == response.json()["id"]
    other = photo[:-3] + b"\x00" + photo[-2:]  # one byte differs (in the scan's end)
    reused = await user.submit("redesign", images=[other], key="big-upload")
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
