"""The identity check covers every method shape, including streaming responses.

A real server on port 0 with raw-bytes methods registered next to a binding: the
existing contracts have no streaming response, a future one must not slip through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kit.grpc_client import create_channel
from kit.grpc_server import GrpcServer, ServiceBinding
from kit.service_identity import EDGE_API, OPERATOR, USAGE, TokenSigner, TokenVerifier
from kit.service_keys import TrustStore, generate_key_pair, write_private_key

SERVICE = "test.Echo"


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for part in (request, request):
        yield part


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


def _register(server: grpc.aio.Server) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Undeclared": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    trust = tmp_path / "trust"
    trust.mkdir()
    for name in (EDGE_API, OPERATOR):
        private_pem, public = generate_key_pair()
        write_private_key(tmp_path / f"{name}.key", private_pem)
        (trust / f"{name}.pub").write_bytes(public)
    binding = ServiceBinding(SERVICE, _register, {"Stream": {EDGE_API}, "Bidi": {EDGE_API}})
    server = GrpcServer(
        [binding],
        host="127.0.0.1",
        port=0,
        max_message_bytes=1024,
        verifier=TokenVerifier(USAGE, TrustStore(trust)),
    )
    port = await server.start()
    yield port, tmp_path
    await server.stop(0)


async def _collect(channel: grpc.aio.Channel, method: str) -> tuple[grpc.StatusCode, list[bytes]]:
    received: list[bytes] = []
    try:
        if method == "Bidi":

            async def requests() -> AsyncIterator[bytes]:
                yield b"hi"

            # Raw bytes both ways (no serializers): the stubs cannot infer that.
            bidi: grpc.aio.StreamStreamMultiCallable[bytes, bytes]
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi")
            call: Any = bidi(requests(), timeout=5)
        else:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
            stream = channel.unary_stream(f"/{SERVICE}/{method}")
            call = stream(b"hi", timeout=5)
        async for message in call:
            received.append(message)
    except grpc.aio.AioRpcError as error:
        return error.code(), received
    return grpc.StatusCode.OK, received


async def test_streaming_methods_need_a_token_and_a_declared_caller(echo: Any) -> None:
    port, keys = echo
    target = f"127.0.0.1:{port}"

    def signed(name: str) -> grpc.aio.Channel:
        return create_channel(
            target, signer=TokenSigner(name, keys / f"{name}.key"), audience=USAGE
        )

    async with (
        create_channel(target) as anonymous,
        signed(EDGE_API) as edge,
        signed(OPERATOR) as operator,
    ):
        for method in ("Stream", "Bidi", "Undeclared"):
            code, _ = await _collect(anonymous, method)
            assert code == grpc.StatusCode.UNAUTHENTICATED, method
        assert await _collect(edge, "Stream") == (grpc.StatusCode.OK, [b"hi", b"hi"])
        assert await _collect(edge, "Bidi") == (grpc.StatusCode.OK, [b"hi"])
        assert (await _collect(operator, "Stream"))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert (await _collect(edge, "Undeclared"))[0] == grpc.StatusCode.PERMISSION_DENIED
