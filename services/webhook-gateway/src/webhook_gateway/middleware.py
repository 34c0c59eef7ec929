"""A request id of our own for every HTTP request, bound to the log context (so every
line carries it and the outgoing gRPC metadata propagates it) and echoed in the
response header. A caller's well-formed ``x-request-id`` (Envoy's, the provider's) is
logged beside it as ``clientRequestId``, never used in its place. Every answer says
``Cache-Control: no-store``, as the API's do.

Anything unexpected below is answered here, as the generic 500 with that id, and not
raised on: Starlette's own last-resort handler sits outside this middleware (no id)
and re-raises to the server, which then drops the connection Envoy pooled.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.logging import bind_context, clear_context, request_ids
from webhook_gateway.responses import internal_error_handler

REQUEST_ID_HEADER = "x-request-id"


class RequestIdMiddleware:
    """Pure ASGI middleware, so the context it binds is the endpoint's context."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        ids = request_ids(Headers(scope=scope).get(REQUEST_ID_HEADER))

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = ids["requestId"]
                if "cache-control" not in headers:
                    # An answer about one delivery (or this process's health): never stored.
                    headers["Cache-Control"] = "no-store"
            await send(message)

        bind_context(**ids)
        try:
            await self._app(scope, receive, send_with_id)
        except Exception as error:
            answer = await internal_error_handler(Request(scope), error)
            if not started:
                await answer(scope, receive, send_with_id)
        finally:
            clear_context(*ids)
