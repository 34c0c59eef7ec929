"""A service of raw handlers behind kit's GrpcServer on port 0, for tests of kit itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc

from kit.grpc_client import create_channel
from kit.grpc_server import GrpcServer, ServiceBinding


@asynccontextmanager
async def serving(
    service: str, methods: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
) -> AsyncIterator[grpc.aio.Channel]:
    """``methods`` of ``service`` served with every kit interceptor; a channel to them."""
    handler = grpc.method_handlers_generic_handler(service, dict(methods))
    server = GrpcServer(
        [ServiceBinding(service, lambda s: s.add_generic_rpc_handlers((handler,)))],
        host="127.0.0.1",
        port=0,
        max_message_bytes=1024 * 1024,
    )
    port = await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)
