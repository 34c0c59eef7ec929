"""Stand-in generation and usage servicers served by the kit's real gRPC server."""

from __future__ import annotations

from interior.generation.v1 import generation_pb2_grpc
from interior.usage.v1 import usage_pb2_grpc
from kit.grpc_server import GrpcServer, ServiceBinding


def standin_server(
    generation: generation_pb2_grpc.GenerationServiceServicer,
    usage: usage_pb2_grpc.UsageServiceServicer,
    max_message_bytes: int,
) -> GrpcServer:
    """Both servicers on 127.0.0.1 and a free port (``await server.start()`` gives it)."""
    return GrpcServer(
        [
            ServiceBinding(
                "interior.generation.v1.GenerationService",
                lambda s: generation_pb2_grpc.add_GenerationServiceServicer_to_server(
                    generation, s
                ),
            ),
            ServiceBinding(
                "interior.usage.v1.UsageService",
                lambda s: usage_pb2_grpc.add_UsageServiceServicer_to_server(usage, s),
            ),
        ],
        host="127.0.0.1",
        port=0,
        max_message_bytes=max_message_bytes,
    )
