"""The edge's outgoing connections: gRPC channels, stubs and object storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from edge_api.settings import EdgeSettings
from interior.generation.v1 import generation_pb2_grpc
from interior.usage.v1 import usage_pb2_grpc
from kit.grpc_client import create_channel
from kit.service_identity import EDGE_API, GENERATION, USAGE
from kit.storage import ObjectStorage

if TYPE_CHECKING:
    from interior.generation.v1.generation_pb2_grpc import GenerationServiceAsyncStub
    from interior.usage.v1.usage_pb2_grpc import UsageServiceAsyncStub

# Seconds in-flight calls get when the edge shuts down.
CHANNEL_CLOSE_GRACE = 5.0
# Concurrent object-store reads (public renders): bounds threads and sockets.
STORAGE_POOL_SIZE = 16


@dataclass
class Clients:
    """Stubs the routes call; built once, closed once."""

    generation: GenerationServiceAsyncStub
    usage: UsageServiceAsyncStub
    # grpc_health ships no type stubs.
    generation_health: Any
    usage_health: Any
    storage: ObjectStorage | None
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def close(self) -> None:
        """Close every channel, letting in-flight calls finish briefly."""
        for channel in self.channels:
            await channel.close(grace=CHANNEL_CLOSE_GRACE)


def open_clients(settings: EdgeSettings) -> Clients:
    """Channels to both services; storage only when the edge serves public renders."""
    signer = settings.service_identity(EDGE_API).signer
    generation_channel = create_channel(
        settings.generation_grpc_target,
        settings.grpc_max_message_bytes,
        signer=signer,
        audience=GENERATION,
    )
    usage_channel = create_channel(
        settings.usage_grpc_target, settings.grpc_max_message_bytes, signer=signer, audience=USAGE
    )
    storage = (
        ObjectStorage(settings, pool_size=STORAGE_POOL_SIZE)
        if settings.s3_public_base_url is None
        else None
    )
    return Clients(
        generation=generation_pb2_grpc.GenerationServiceStub(generation_channel),
        usage=usage_pb2_grpc.UsageServiceStub(usage_channel),
        generation_health=health_pb2_grpc.HealthStub(generation_channel),
        usage_health=health_pb2_grpc.HealthStub(usage_channel),
        storage=storage,
        channels=[generation_channel, usage_channel],
    )
