"""Limits everywhere: body caps (Envoy and edge), header caps, gRPC message sizes,
and fair uploads (a user's concurrent uploads, answered 429 through Envoy).

Caps are checked on the real parts: the deployed Envoy config in front of the
in-process stack, the edge itself, and the generation gRPC server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from edge_api.state import EdgeState
from edge_api.uploads import READ_CHUNK_BYTES
from generation.settings import GenerationSettings
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.grpc_client import create_channel
from kit.runtime_config import load_runtime_config
from kit.service_identity import EDGE_API, GENERATION
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.envoy import Envoy, running_envoy
from testkit.plugin import S3Endpoint
from testkit.servers import ThreadedUvicorn
from testkit.stack import Stack
from tests.badinput.checks import assert_error, assert_nothing_left
from tests.e2e.harness import User, jpeg_bytes
from webhook_gateway.settings import GatewaySettings

# deploy/envoy/envoy.yaml: declared lengths from 21 MiB + 1 are refused on the upload route.
ENVOY_UPLOAD_CAP = 21 * 1024 * 1024
ENVOY_WEBHOOK_CAP = 1024 * 1024
UPLOAD_TOO_LARGE = {"error": {"code": "VALIDATION_ERROR", "message": "The upload is too large."}}


async def raw_exchange(
    port: int, head: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send a request head (and maybe part of a body); read one answer by its length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        status_line, *lines = raw_head.decode("latin-1").strip().split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        length = int(headers.get("content-length", "0"))
        answer = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, answer


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _upload_head(token: str, length: int, host: str = "api") -> str:
    return (
        f"POST /api/v1/generations HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )


async def test_envoy_refuses_a_declared_upload_over_its_cap_before_reading(
    stack: Stack, envoy: Envoy, user: User
) -> None:
    token = user.headers["Authorization"].removeprefix("Bearer ")
    status, headers, body = await raw_exchange(
        _port(envoy.url), _upload_head(token, ENVOY_UPLOAD_CAP + 1), b"--b\r\n"
    )
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert headers.get("x-request-id")
    assert httpx.Response(413, content=body).json() == UPLOAD_TOO_LARGE
    await assert_nothing_left(stack, user)


async def test_envoy_refuses_a_webhook_body_over_its_buffer_cap(
    envoy_client: httpx.AsyncClient,
) -> None:
    body = b'{"pad": "' + b"a" * ENVOY_WEBHOOK_CAP + b'"}'
    response = await envoy_client.post(
        "/api/v1/webhooks/replicate", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "VALIDATION_ERROR")


async def test_envoy_refuses_huge_headers_with_431(envoy_client: httpx.AsyncClient) -> None:
    response = await envoy_client.get("/api/v1/usage", headers={"X-Filler": "x" * 64 * 1024})
    # Refused by the codec before a stream exists: JSON body, but no request id to echo.
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_edge_refuses_a_declared_body_over_its_cap(stack: Stack, user: User) -> None:
    limit = EdgeSettings(S3_ENDPOINT="x", S3_ACCESS_KEY="x", S3_SECRET_KEY="x").request_limit(
        load_runtime_config(REPO_RUNTIME_CONFIG).uploads.max_bytes
    )
    token = user.headers["Authorization"].removeprefix("Bearer ")
    status, headers, body = await raw_exchange(
        stack.edge.port, _upload_head(token, limit + 1), b"--b\r\n"
    )
    assert status == 413
    assert headers.get("x-request-id")
    assert httpx.Response(413, content=body).json()["error"]["code"] == "VALIDATION_ERROR"
    await assert_nothing_left(stack, user)


@pytest.fixture
async def small_edge(stack: Stack, s3_server: S3Endpoint) -> AsyncIterator[str]:
    """An edge with MAX_REQUEST_BYTES = 64 KiB in front of the same backends."""
    settings = EdgeSettings.model_validate(
        dict(
            GENERATION_GRPC_TARGET=f"127.0.0.1:{stack.generation.server.port}",
            USAGE_GRPC_TARGET=stack.usage_target,
            MAX_REQUEST_BYTES=64 * 1024,
            **s3_server.env(),
        )
    )
    server = ThreadedUvicorn(
        create_edge_app(settings, load_runtime_config(REPO_RUNTIME_CONFIG)), name="small-edge"
    ).start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def test_the_edge_cap_holds_for_streamed_bodies_without_a_length(
    stack: Stack, user: User, small_edge: str
) -> None:
    picture = jpeg_bytes() + bytes(128 * 1024)  # twice the cap, sent without a length

    async def chunks() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="mode"\r\n\r\nredesign\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="input1"; filename="a.jpg"\r\n\r\n'
        for start in range(0, len(picture), 8192):
            yield picture[start : start + 8192]
        yield b"\r\n--b--\r\n"

    assert len(picture) > 64 * 1024
    response = await user.client.post(
        f"{small_edge}/api/v1/generations",
        content=chunks(),
        headers={**user.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_error(response, 413, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


def test_the_size_limits_are_chained_consistently() -> None:
    """Envoy lets through what the edge accepts; every gRPC message fits generation's max.

    Uploads travel in chunks, so the largest messages are a chunk (plus its
    framing) from the edge and a provider event forwarded by the gateway.
    """
    uploads = load_runtime_config(REPO_RUNTIME_CONFIG).uploads
    edge = EdgeSettings(S3_ENDPOINT="x", S3_ACCESS_KEY="x", S3_SECRET_KEY="x")
    generation = GenerationSettings(
        GENERATION_DATABASE_URL="postgresql+asyncpg://x/y", S3_ENDPOINT="x",
        S3_ACCESS_KEY="x", S3_SECRET_KEY="x",
    )  # fmt: skip
    request_limit = edge.request_limit(uploads.max_bytes)
    assert 2 * uploads.max_bytes < request_limit <= ENVOY_UPLOAD_CAP
    largest_part = READ_CHUNK_BYTES + 64 * 1024  # a chunk, or a request part with its text
    assert largest_part <= edge.grpc_max_message_bytes <= generation.grpc_max_message_bytes
    event_message = GatewaySettings().webhook_max_body_bytes + 64 * 1024
    assert event_message <= generation.grpc_max_message_bytes
    assert generation.grpc_max_message_bytes < uploads.max_bytes  # never a whole upload


async def test_generation_refuses_a_grpc_message_over_its_max(stack: Stack, user: User) -> None:
    """A direct call (no edge in between) with a message over GRPC_MAX_MESSAGE_BYTES."""
    limit = GenerationSettings(
        GENERATION_DATABASE_URL="postgresql+asyncpg://x/y", S3_ENDPOINT="x",
        S3_ACCESS_KEY="x", S3_SECRET_KEY="x",
    ).grpc_max_message_bytes  # fmt: skip
    target = f"127.0.0.1:{stack.generation.server.port}"
    channel = create_channel(
        target, max_message_bytes=limit * 2, signer=stack.signer(EDGE_API), audience=GENERATION
    )
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)

        async def submit(size: int) -> Any:
            """One input sent as a single chunk of ``size`` bytes."""
            request = generation_pb2.SubmitGenerationRequest(
                owner_id=str(user.id),
                mode="redesign",
                inputs=[generation_pb2.DeclaredInput(field="input1", size_bytes=size)],
            )
            chunk = generation_pb2.InputChunk(input_index=0, data=b"\0" * size)
            parts = [
                generation_pb2.SubmitGenerationPart(request=request),
                generation_pb2.SubmitGenerationPart(chunk=chunk),
            ]
            return await stub.SubmitGeneration(iter(parts), timeout=30)

        with pytest.raises(grpc.aio.AioRpcError) as too_large:
            await submit(limit + 1024)
        assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Just under the limit the message is read and judged on its content instead.
        with pytest.raises(grpc.aio.AioRpcError) as judged:
            await submit(limit - 64 * 1024)
        assert judged.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await channel.close()
    await assert_nothing_left(stack, user)


@pytest.fixture
async def fair_envoy(
    stack: Stack, s3_server: S3Endpoint, tmp_path: Path
) -> AsyncIterator[tuple[Envoy, EdgeState]]:
    """The deployed Envoy in front of an edge with the production fairness defaults.

    (The shared stack's edge lifts the per-user limit for the parallel-submit suites.)
    """
    settings = EdgeSettings.model_validate(
        dict(
            GENERATION_GRPC_TARGET=f"127.0.0.1:{stack.generation.server.port}",
            USAGE_GRPC_TARGET=stack.usage_target,
            **s3_server.env(),
            **stack.identity_env("edge-api"),
        )
    )
    app = create_edge_app(settings, load_runtime_config(REPO_RUNTIME_CONFIG))
    with (
        ThreadedUvicorn(app, name="fair-edge") as edge,
        running_envoy(tmp_path, edge.port, stack.gateway.port) as proxy,
    ):
        yield proxy, app.state.edge


async def _held_upload(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upload that declares 1 MiB and sends only its first part: it stays in progress."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = (
        b'--b\r\nContent-Disposition: form-data; name="mode"\r\n\r\nredesign\r\n'
        b'--b\r\nContent-Disposition: form-data; name="input1"; filename="a.jpg"\r\n\r\n'
    )
    writer.write(_upload_head(token, 1024 * 1024).encode() + first + b"x" * 4096)
    await writer.drain()
    return reader, writer


async def _until_uploads(edge: EdgeState, expected: dict[str, int]) -> None:
    """Poll the edge's per-user upload counts (it serves in another thread)."""
    async with asyncio.timeout(10):
        while edge.uploads.uploads_by_user() != expected:
            await asyncio.sleep(0.01)
    assert edge.uploads.slots_in_use() == sum(expected.values())


async def test_through_envoy_a_third_concurrent_upload_is_429_and_others_still_submit(
    stack: Stack, fair_envoy: tuple[Envoy, EdgeState], user: User, other_user: User
) -> None:
    envoy, edge = fair_envoy
    token = user.headers["Authorization"].removeprefix("Bearer ")
    port = _port(envoy.url)
    held = [await _held_upload(port, token) for _ in range(2)]
    await _until_uploads(edge, {str(user.id): 2})

    status, headers, body = await raw_exchange(port, _upload_head(token, 1024 * 1024), b"--b\r\n")
    other = await user.client.post(
        f"{envoy.url}/api/v1/generations",
        json={"mode": "imagine", "prompt": "A bright kitchen with timber benches"},
        headers=other_user.headers,
    )

    assert status == 429
    assert int(headers["retry-after"]) > 0
    assert httpx.Response(429, content=body).json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert other.status_code == 202, other.text
    for _, writer in held:  # Envoy resets the upstream streams: the edge lets go of both
        writer.close()
    await _until_uploads(edge, {})
    await assert_nothing_left(stack, user)
