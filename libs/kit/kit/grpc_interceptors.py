"""Server interceptors: request context + logs, service identity, domain errors -> status.

``grpc.aio`` interceptors see handlers, not calls, so each one wraps the
handler's behaviour function: ``wrap`` for a single response (unary or
client-streaming), ``wrap_streaming`` for a streamed one (WatchJobs). Health and
reflection calls pass untouched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from kit.errors import DomainError, InternalError, ServiceUnavailable, ValidationError
from kit.grpc_errors import to_grpc_status
from kit.logging import bind_context, clear_context, get_logger, request_ids
from kit.service_identity import TokenVerifier, Unauthenticated

log = get_logger("kit.grpc")

REQUEST_ID_KEY = "x-request-id"
# Initial metadata of a client-streaming call whose answer is decided: the sender may
# stop writing and half-close; the status follows (SubmitGeneration's contract).
STOP_SENDING_KEY = "x-stop-sending"
STOP_SENDING = ((STOP_SENDING_KEY, "1"),)
# Failures to reach a dependency over the network. A service with a database adds
# its driver's (kit.db.UNAVAILABLE_ERRORS), so kit itself never imports SQLAlchemy.
NETWORK_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
_PASSTHROUGH_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# An async generator (grpc.aio's shape for a streamed answer): closed when the call ends.
StreamingBehaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    # Parse the request inside the wrapped behaviour (see _wrapped): the innermost one.
    _decode = False

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        """The behaviour of a method with one response."""
        raise NotImplementedError

    def wrap_streaming(self, behaviour: StreamingBehaviour, method: str) -> StreamingBehaviour:
        """The behaviour of a method that streams its responses (it yields them)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_PASSTHROUGH_PREFIXES):
            return handler
        return _wrapped(handler, method, self, decode=self._decode)


def _wrapped(
    handler: Handler, method: str, interceptor: _WrappingInterceptor, *, decode: bool = False
) -> Handler:
    """``handler`` with its behaviour wrapped by ``interceptor``, whatever its shape.

    A client-streaming behaviour takes the request iterator where a unary one takes the
    request, and both return one awaited response, so ``wrap`` serves both; the two
    server-streaming shapes yield their responses, so ``wrap_streaming`` serves those.

    With ``decode``, the request bytes are parsed inside the wrapped behaviour instead
    of by gRPC before any interceptor runs (where a message that does not parse ends
    the call with UNKNOWN and the parser's text): a ValidationError there, which the
    interceptor maps like any other.
    """
    deserializer = handler.request_deserializer
    parse = decode and deserializer is not None

    def inner(behaviour: Any) -> Any:
        if not parse:
            return behaviour
        assert deserializer is not None
        return _decoding(behaviour, deserializer, handler.request_streaming)

    build: Any
    if handler.unary_unary is not None or handler.stream_unary is not None:
        build, single = (
            (grpc.unary_unary_rpc_method_handler, handler.unary_unary)
            if handler.unary_unary is not None
            else (grpc.stream_unary_rpc_method_handler, handler.stream_unary)
        )
        behaviour: Any = interceptor.wrap(cast(Behaviour, inner(single)), method)
    elif handler.unary_stream is not None or handler.stream_stream is not None:
        build, streaming = (
            (grpc.unary_stream_rpc_method_handler, handler.unary_stream)
            if handler.unary_stream is not None
            else (grpc.stream_stream_rpc_method_handler, handler.stream_stream)
        )
        behaviour = interceptor.wrap_streaming(cast(StreamingBehaviour, inner(streaming)), method)
    else:
        return handler
    if parse:
        deserializer = None
    return cast(
        Handler,
        build(
            behaviour,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        ),
    )


UNDECODABLE = "The request could not be decoded."


def _decoded(deserializer: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return deserializer(raw)
    except DecodeError:
        raise ValidationError(UNDECODABLE) from None


async def _decoded_stream(
    deserializer: Callable[[bytes], Any], raws: AsyncIterator[bytes]
) -> AsyncIterator[Any]:
    async for raw in raws:
        yield _decoded(deserializer, raw)


def _decoding(behaviour: Any, deserializer: Callable[[bytes], Any], streamed: bool) -> Any:
    """``behaviour`` taking the request's bytes (or a stream of them) and parsing them."""

    def single(request: bytes, context: Any) -> Any:
        return behaviour(_decoded(deserializer, request), context)

    def stream(requests: AsyncIterator[bytes], context: Any) -> Any:
        return behaviour(_decoded_stream(deserializer, requests), context)

    return stream if streamed else single


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


class RequestContextInterceptor(_WrappingInterceptor):
    """Binds a new request id (the caller's ``x-request-id``, when well-formed, as
    ``clientRequestId`` beside it) and logs each call."""

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _logged_call(context, method):
                return await behaviour(request, context)

        return handle

    def wrap_streaming(self, behaviour: StreamingBehaviour, method: str) -> StreamingBehaviour:
        async def handle(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            with _logged_call(context, method):
                async with contextlib.aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response

        return handle


@contextlib.contextmanager
def _logged_call(context: grpc.aio.ServicerContext[Any, Any], method: str) -> Iterator[None]:
    """The call's request ids bound while it runs, and ``rpc.finished`` logged at its end."""
    ids = request_ids(_metadata_value(context, REQUEST_ID_KEY))
    bind_context(**ids, rpc=method)
    started = time.perf_counter()
    outcome = "OK"
    try:
        yield
    except BaseException:
        outcome = "ERROR"
        raise
    finally:
        code = context.code()
        log.info(
            "rpc.finished",
            outcome=code.name if isinstance(code, grpc.StatusCode) else outcome,
            durationMs=round((time.perf_counter() - started) * 1000, 2),
        )
        clear_context(*ids, "rpc")


class DomainErrorInterceptor(_WrappingInterceptor):
    """Maps domain errors to rich statuses; anything unexpected to INTERNAL_ERROR.

    ``unavailable`` names the exception types that mean a dependency cannot be
    reached now (retryable UNAVAILABLE, not a bug), besides network failures.
    """

    def __init__(self, unavailable: tuple[type[BaseException], ...] = ()) -> None:
        self._unavailable = NETWORK_UNAVAILABLE_ERRORS + unavailable

    # The innermost interceptor, so the request is parsed where a message that does not
    # parse becomes VALIDATION_ERROR (the outer ones never look at it).
    _decode = True

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await self._abort(error, context)

        return handle

    def wrap_streaming(self, behaviour: StreamingBehaviour, method: str) -> StreamingBehaviour:
        async def handle(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            try:
                async with contextlib.aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await self._abort(error, context)

        return handle

    async def _abort(
        self, error: Exception, context: grpc.aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        """End the call with ``error``'s status (called while it is being handled)."""
        if isinstance(error, DomainError):
            log.info("rpc.domain_error", code=error.code)
            await context.abort_with_status(to_grpc_status(error))
        elif isinstance(error, self._unavailable):
            # A database outage or a pool exhausted: retryable, not a bug.
            log.warning("rpc.dependency_unavailable", error=type(error).__name__)
            await context.abort_with_status(to_grpc_status(ServiceUnavailable()))
        else:
            log.exception("rpc.unexpected_error")
            await context.abort_with_status(to_grpc_status(InternalError()))
        raise AssertionError("unreachable: abort_with_status raises")


AUTHORIZATION_KEY = "authorization"
Policy = Mapping[str, frozenset[str]]


class ServiceAuthInterceptor(_WrappingInterceptor):
    """Lets a call through only with a valid service token from a caller the method allows.

    ``policy`` maps each full method path (``/pkg.Service/Method``) to the caller names
    allowed to use it; a method missing from it is denied to everyone. Health (and
    reflection, when it is on) pass untouched. Unlike the other interceptors it also
    wraps streaming responses: no method shape may skip the check.
    """

    def __init__(self, verifier: TokenVerifier, policy: Policy) -> None:
        self._verifier = verifier
        self._policy = policy

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        allowed = self._policy.get(method, frozenset())

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            caller = await self._authorize(context, allowed)
            bind_context(caller=caller)
            try:
                return await behaviour(request, context)
            finally:
                clear_context("caller")

        return handle

    def wrap_streaming(self, behaviour: StreamingBehaviour, method: str) -> StreamingBehaviour:
        allowed = self._policy.get(method, frozenset())

        async def handle(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            caller = await self._authorize(context, allowed)
            bind_context(caller=caller)
            try:
                async with contextlib.aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response
            finally:
                clear_context("caller")

        return handle

    async def _authorize(
        self, context: grpc.aio.ServicerContext[Any, Any], allowed: frozenset[str]
    ) -> str:
        """The verified caller when it may call; otherwise the call is aborted."""
        try:
            caller = self._verifier.caller(_metadata_value(context, AUTHORIZATION_KEY))
        except Unauthenticated as refusal:
            log.warning("rpc.unauthenticated", reason=str(refusal))
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "A valid service token is required."
            )
        if caller not in allowed:
            log.warning("rpc.permission_denied", caller=caller)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not call this method."
            )
        return caller
