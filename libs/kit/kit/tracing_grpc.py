"""Client spans of outgoing gRPC calls (grpc.aio), with W3C ``traceparent`` metadata.

Ours rather than opentelemetry-instrumentation-grpc's aio client interceptors: those
await the end of a client-streaming call before handing it back (a call fed with
``call.write()``, as the edge's upload is, never gets its parts) and turn streamed
answers into plain generators. These hand the call back at once and end the span
when the call is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

Continuation = Callable[[grpc.aio.ClientCallDetails, Any], Any]


class _Traced:
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def traced(
        self, continuation: Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Start the client span, carry its context in the metadata, make the call."""
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.lstrip("/").partition("/")
        span = self._tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            metadata[key] = value
        try:
            call = await continuation(
                grpc.aio.ClientCallDetails(
                    method=details.method,
                    timeout=details.timeout,
                    metadata=metadata,
                    credentials=details.credentials,
                    wait_for_ready=details.wait_for_ready,
                ),
                request,
            )
        except BaseException as error:
            _end(span, grpc.StatusCode.UNKNOWN, type(error).__name__)
            raise
        call.add_done_callback(lambda done: _finish_soon(span, done))
        return call


def _finish_soon(span: trace.Span, call: Any) -> None:
    # Done callbacks cannot await; the call is over, so its code is at hand.
    asyncio.get_running_loop().create_task(_finish(span, call))


async def _finish(span: trace.Span, call: Any) -> None:
    try:
        code = await call.code()
    except (asyncio.CancelledError, grpc.RpcError):
        code = grpc.StatusCode.CANCELLED
    _end(span, code, code.name)


def _end(span: trace.Span, code: grpc.StatusCode, description: str) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        # The code's name only: a status message may echo what the caller sent.
        span.set_status(Status(StatusCode.ERROR, description))
    span.end()


class _UnaryUnary(_Traced, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Continuation, client_call_details: Any, request: Any
    ) -> Any:
        return await self.traced(continuation, client_call_details, request)


class _UnaryStream(_Traced, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Continuation, client_call_details: Any, request: Any
    ) -> Any:
        return await self.traced(continuation, client_call_details, request)


class _StreamUnary(_Traced, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Continuation, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self.traced(continuation, client_call_details, request_iterator)


class _StreamStream(_Traced, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Continuation, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self.traced(continuation, client_call_details, request_iterator)


def client_interceptors(tracer: trace.Tracer) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call shape, all making client spans with ``tracer``."""
    return [_UnaryUnary(tracer), _UnaryStream(tracer), _StreamUnary(tracer), _StreamStream(tracer)]
