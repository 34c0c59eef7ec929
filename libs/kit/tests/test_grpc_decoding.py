"""A request that does not parse is the caller's error, in every method shape.

gRPC parses a request before any interceptor runs, and a message that does not parse
ends the call there with UNKNOWN and the parser's text (a 5xx at the edge, an error
logged). kit's innermost interceptor parses it instead: VALIDATION_ERROR.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from kit.grpc_errors import from_rpc_error
from kit.grpc_interceptors import UNDECODABLE
from testkit.grpc_serving import serving

SERVICE = "kit.test.Echo"
# StringValue's field 1 with 2 bytes that are not UTF-8; field 1 announced as 50 bytes
# long with 3 following.
BAD_UTF8 = b"\x0a\x02\xff\xfe"
TRUNCATED = b"\x0a\x32abc"
GOOD = StringValue(value="hello").SerializeToString()


class _Echo:
    async def one(self, request: StringValue, context: Any) -> bytes:
        assert isinstance(request, StringValue)
        return request.value.encode()

    async def many(self, request: StringValue, context: Any) -> AsyncIterator[bytes]:
        assert isinstance(request, StringValue)
        yield request.value.encode()

    async def joined(self, requests: AsyncIterator[StringValue], context: Any) -> bytes:
        return b"".join([request.value.encode() async for request in requests])

    async def each(
        self, requests: AsyncIterator[StringValue], context: Any
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.value.encode()


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    echo, parse = _Echo(), StringValue.FromString
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "One": grpc.unary_unary_rpc_method_handler(echo.one, request_deserializer=parse),
        "Many": grpc.unary_stream_rpc_method_handler(echo.many, request_deserializer=parse),
        "Joined": grpc.stream_unary_rpc_method_handler(echo.joined, request_deserializer=parse),
        "Each": grpc.stream_stream_rpc_method_handler(echo.each, request_deserializer=parse),
    }
    async with serving(SERVICE, methods) as channel:
        yield channel


async def _call(channel: grpc.aio.Channel, method: str, payload: bytes) -> list[bytes]:
    """The answers to ``payload`` sent once (after a good message, to a streamed request)."""
    path = f"/{SERVICE}/{method}"
    raw: Any = channel  # raw bytes each way: no (de)serializers given
    if method == "One":
        return [await raw.unary_unary(path)(payload, timeout=10)]
    if method == "Many":
        return [answer async for answer in raw.unary_stream(path)(payload, timeout=10)]

    async def parts() -> AsyncIterator[bytes]:
        yield GOOD
        yield payload

    if method == "Joined":
        return [await raw.stream_unary(path)(parts(), timeout=10)]
    return [answer async for answer in raw.stream_stream(path)(parts(), timeout=10)]


@pytest.mark.parametrize("method", ["One", "Many", "Joined", "Each"])
@pytest.mark.parametrize("payload", [BAD_UTF8, TRUNCATED], ids=["bad-utf8", "truncated"])
async def test_a_request_that_does_not_parse_is_a_validation_error(
    channel: grpc.aio.Channel, method: str, payload: bytes
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, method, payload)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = from_rpc_error(caught.value)
    assert (error.code, error.message) == ("VALIDATION_ERROR", UNDECODABLE)


@pytest.mark.parametrize("method", ["One", "Many", "Joined", "Each"])
async def test_a_request_that_parses_reaches_the_method_parsed(
    channel: grpc.aio.Channel, method: str
) -> None:
    answers = await _call(channel, method, GOOD)
    assert b"".join(answers) == (b"hellohello" if method in ("Joined", "Each") else b"hello")
