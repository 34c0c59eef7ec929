"""Streaming methods get the same interceptors as unary ones.

Raw-bytes stream-unary and unary-stream methods behind kit's GrpcServer: domain
errors become rich statuses, the request id is bound, and every call is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import structlog
from prometheus_client import REGISTRY

from kit.errors import PayloadTooLarge
from kit.grpc_errors import from_rpc_error
from testkit.grpc_serving import serving

SERVICE = "kit.test.Collector"
METHOD = f"/{SERVICE}/Collect"


class _Collector:
    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def count(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Streams ``request``'s bytes one by one; a too-long request fails midway."""
        bound = structlog.contextvars.get_contextvars()
        self.request_ids.append(str(bound.get("clientRequestId")))
        for index, byte in enumerate(request):
            if index >= 3:
                raise PayloadTooLarge("Too long.")
            yield bytes([byte])

    async def collect(
        self, parts: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        bound = structlog.contextvars.get_contextvars()
        self.request_ids.append(str(bound.get("clientRequestId")))
        total = b""
        async for part in parts:
            total += part
            if len(total) > 8:
                raise PayloadTooLarge("Too much.")
        return total


@pytest.fixture
async def channel() -> AsyncIterator[tuple[_Collector, grpc.aio.Channel]]:
    collector = _Collector()
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Collect": grpc.stream_unary_rpc_method_handler(collector.collect),
        "Count": grpc.unary_stream_rpc_method_handler(collector.count),
    }
    async with serving(SERVICE, methods) as channel:
        yield collector, channel


def _handled(code: str, method: str = "Collect") -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def _handled_soon(code: str, method: str, expected: float) -> float:
    """``_handled`` once it reaches ``expected`` (or after 2 s): a streamed call's status
    can reach the client before the server's interceptor has counted the call."""
    for _ in range(200):
        if (value := _handled(code, method)) >= expected:
            return value
        await asyncio.sleep(0.01)
    return _handled(code, method)


async def test_a_stream_is_answered_and_counted_with_its_request_id(channel: Any) -> None:
    collector, chan = channel
    before = _handled("OK")
    call = chan.stream_unary(METHOD)
    reply = await call(iter([b"ab", b"cd"]), timeout=5, metadata=(("x-request-id", "rid-7"),))
    assert reply == b"abcd"
    assert collector.request_ids == ["rid-7"]  # the caller's, beside one of ours
    assert _handled("OK") == before + 1


async def test_a_domain_error_in_a_stream_carries_its_normalized_code(channel: Any) -> None:
    _, chan = channel
    before = _handled("INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chan.stream_unary(METHOD)(iter([b"12345", b"67890"]), timeout=5)
    remote = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (remote.code, remote.reason, remote.message) == (
        "VALIDATION_ERROR",
        "PAYLOAD_TOO_LARGE",
        "Too much.",
    )
    assert _handled("INVALID_ARGUMENT") == before + 1


async def test_a_streamed_answer_is_counted_with_its_request_id(channel: Any) -> None:
    # WatchJobs' shape: without the wrappers it was neither counted nor logged, and an
    # unexpected error in it was not mapped.
    collector, chan = channel
    before = _handled("OK", "Count")
    call = chan.unary_stream(f"/{SERVICE}/Count")
    replies = [r async for r in call(b"abc", timeout=5, metadata=(("x-request-id", "rid-8"),))]
    assert replies == [b"a", b"b", b"c"]
    assert collector.request_ids == ["rid-8"]
    assert await _handled_soon("OK", "Count", before + 1) == before + 1


async def test_a_domain_error_midway_through_a_stream_carries_its_code(channel: Any) -> None:
    _, chan = channel
    before = _handled("INVALID_ARGUMENT", "Count")
    received: list[bytes] = []

    async def read_all() -> None:
        async for reply in chan.unary_stream(f"/{SERVICE}/Count")(b"abcdef", timeout=5):
            received.append(reply)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert received == [b"a", b"b", b"c"]
    remote = from_rpc_error(caught.value)
    assert (remote.code, remote.reason, remote.message) == (
        "VALIDATION_ERROR",
        "PAYLOAD_TOO_LARGE",
        "Too long.",
    )
    assert await _handled_soon("INVALID_ARGUMENT", "Count", before + 1) == before + 1
