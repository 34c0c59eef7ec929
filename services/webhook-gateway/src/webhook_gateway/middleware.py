"""A request id for every HTTP request: taken from ``x-request-id`` or new.

It is bound to the log context (so every line carries it and the outgoing gRPC
metadata propagates it) and echoed in the response header.
"""

from __future__ import annotations

import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.logging import bind_context, clear_context

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID_LENGTH = 64


def _request_id(scope: Scope) -> str:
    incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")[:_MAX_REQUEST_ID_LENGTH]
    # Only printable ASCII is echoed back and logged; anything else gets a new id.
    if incoming and incoming.isascii() and incoming.isprintable():
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware, so the context it binds is the endpoint's context."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        bind_context(requestId=request_id)
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            clear_context("requestId")
