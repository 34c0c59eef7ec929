"""The body cap: declared lengths, plain bodies and streams that never end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import GatewayFactory, GenerationDouble, RunningGateway

Signer = Callable[..., dict[str, str]]
PATH = "/api/v1/webhooks/replicate"
CAP = 2048


def _padded_object(size: int) -> bytes:
    prefix, suffix = b'{"pad": "', b'"}'
    return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix


async def _raw_exchange(gw: RunningGateway, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request head and some body bytes, then read the answer without finishing.

    Asserts that the gateway then closes the connection rather than draining the body.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(head)
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_bytes.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        answer = head_bytes + await asyncio.wait_for(reader.readexactly(length), timeout=5)
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        return answer
    finally:
        writer.close()


async def test_a_body_at_the_cap_is_accepted(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    body = _padded_object(CAP)
    async with start_gateway(max_body_bytes=CAP) as gw:
        response = await gw.client.post(PATH, content=body, headers=signer(body))
    assert response.status_code == 200
    assert generation.servicer.received[0].payload == body


async def test_a_body_over_the_cap_gets_413_and_nothing_is_forwarded(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    body = _padded_object(CAP + 1)
    async with start_gateway(max_body_bytes=CAP) as gw:
        response = await gw.client.post(PATH, content=body, headers=signer(body))
    assert response.status_code == 413
    assert response.json() == {
        "error": {"code": "VALIDATION_ERROR", "message": "The webhook body is too large."}
    }
    assert generation.servicer.received == []
    assert [e["reason"] for e in gw.events("webhook.rejected")] == ["too_large"]


async def test_a_declared_length_over_the_cap_is_refused_before_reading(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    ).encode()
    async with start_gateway(max_body_bytes=CAP) as gw:
        answer = await _raw_exchange(gw, head, [b'{"a": 1'])
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert generation.servicer.received == []


def _chunked_head(signed: bool) -> bytes:
    """A chunked POST's head; ``signed``: with signature headers that pass the checks
    that need no body (present, timestamp in the window)."""
    signature = (
        f"webhook-id: msg_1\r\nwebhook-timestamp: {int(time.time())}\r\n"
        "webhook-signature: v1,c2lnbmF0dXJl\r\n"
        if signed
        else ""
    )
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"{signature}Transfer-Encoding: chunked\r\n\r\n"
    ).encode()


# Four times the cap, and never the terminating zero-length chunk.
_ENDLESS = [b"400\r\n" + b"a" * 1024 + b"\r\n" for _ in range(8)]


async def test_a_chunked_stream_that_never_ends_is_cut_off_at_the_cap(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    async with start_gateway(max_body_bytes=CAP) as gw:
        answer = await _raw_exchange(gw, _chunked_head(signed=True), _ENDLESS)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"code":"VALIDATION_ERROR"' in answer
    assert generation.servicer.received == []


async def test_an_unsigned_delivery_is_refused_before_its_body(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    """Nothing without signature headers can be authentic: 401 without reading on."""
    async with start_gateway(max_body_bytes=CAP) as gw:
        answer = await _raw_exchange(gw, _chunked_head(signed=False), _ENDLESS)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert generation.servicer.received == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_the_webhook_path_get_405(
    start_gateway: GatewayFactory, generation: GenerationDouble, method: str
) -> None:
    async with start_gateway() as gw:
        response = await gw.client.request(method, PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert generation.servicer.received == []
