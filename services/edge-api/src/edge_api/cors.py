"""CORS for browsers on other origins: Starlette's middleware, answered our way.

Allowed origins come from ``CORS_ALLOWED_ORIGINS``; other origins get no CORS
header at all. A preflight the policy refuses is answered with our JSON error
body (Starlette's own answer is plain text and still carries CORS headers), and
an accepted one with 204.
"""

from __future__ import annotations

import functools

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_api.errors import error_response
from edge_api.middleware import REQUEST_ID_HEADER
from kit.logging import request_ids

ALLOWED_METHODS = ("GET", "POST", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
EXPOSED_HEADERS = ("Location", "X-Request-ID", "Idempotent-Replayed")
# Browsers cache a preflight at most this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE = 600


class ApiCorsMiddleware(CORSMiddleware):
    """The product's CORS policy for ``origins``."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE,
        )

    async def simple_response(
        self, scope: Scope, receive: Receive, send: Send, request_headers: Headers
    ) -> None:
        """Other origins (and requests with none) get the answer without CORS headers
        (Starlette would add expose headers), but with ``Vary: Origin`` while any origin
        is allowed: a cached copy of an answer to an ``<img>`` load (no Origin) must not
        be handed to an allowed origin's ``fetch``, which needs the CORS headers."""
        if not self.allow_origins:
            await self.app(scope, receive, send)  # nobody gets CORS: nothing varies
            return
        if not self.is_allowed_origin(origin=request_headers.get("origin", "")):
            await self.app(scope, receive, functools.partial(_vary_on_origin, send=send))
            return
        await super().simple_response(scope, receive, send, request_headers)

    def preflight_response(self, request_headers: Headers) -> Response:
        """204 with the CORS headers, or a 400 JSON error with none of them. Either
        way with what every answer carries (this one never reaches the request
        context): a request id, ``Vary: Origin`` (the answer depends on it) and, for
        the error, ``Cache-Control: no-store``."""
        answer = super().preflight_response(request_headers)
        if answer.status_code != 200:
            refused = error_response(
                400,
                "VALIDATION_ERROR",
                "This origin, method or header is not allowed for cross-origin requests.",
            )
            refused.headers["Cache-Control"] = "no-store"
            return _as_every_answer(refused)
        # Only the CORS headers: the "OK" body's length and type do not belong on a 204.
        headers = {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}
        return _as_every_answer(Response(status_code=204, headers=headers))


def _as_every_answer(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_ids(None)["requestId"]
    response.headers["Vary"] = "Origin"
    return response


async def _vary_on_origin(message: Message, send: Send) -> None:
    if message["type"] == "http.response.start":
        message.setdefault("headers", [])
        headers = MutableHeaders(scope=message)
        headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
    await send(message)
