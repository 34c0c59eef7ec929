"""Outgoing gRPC: channels with deliberate limits, request id propagation."""

from __future__ import annotations

import grpc
import structlog

from kit.grpc_interceptors import REQUEST_ID_KEY


def create_channel(target: str, max_message_bytes: int = 24 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure channel (traffic stays inside the deployment) with sane limits."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 1),
            # Spread calls over every address the name resolves to (several replicas
            # behind a headless Service / dns:/// target), not just the first one.
            ("grpc.lb_policy_name", "round_robin"),
        ],
    )


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata for a call made while handling a request: carries its request id."""
    request_id = structlog.contextvars.get_contextvars().get("requestId")
    return ((REQUEST_ID_KEY, str(request_id)),) if request_id else ()
