"""The outermost layer of every request: request id, body cap, access log, last resort.

A pure ASGI middleware (no buffering): it makes a request id of its own for every
request (a caller's well-formed ``X-Request-ID`` is logged beside it as
``clientRequestId``, never used in its place), binds them to the log context (so
outgoing gRPC calls carry ours), echoes ours on every answer, refuses header
blocks over 32 KiB (431, as Envoy in front does; uvicorn's httptools parser has no
such limit of its own) and bodies
over the cap (up front by ``Content-Length``, and while streaming), writes one
access log line, and turns any exception nobody handled into the generic 500 JSON
body.
"""

from __future__ import annotations

import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_api import metrics
from edge_api.errors import domain_error_response, error_response, internal_error_response
from kit.errors import PayloadTooLarge, ValidationError
from kit.logging import bind_context, clear_context, get_logger, request_ids

log = get_logger("edge_api.http")

REQUEST_ID_HEADER = "X-Request-ID"
API_PATH_PREFIX = "/api/v1/"
# What the access log names a request no route took: its path is the client's text
# (an e-mail, a name, a token pasted into a URL) and is not logged. The upload path is
# the one exception: refused here before routing (413, 408), and always that path.
UNMATCHED = "<unmatched>"
# The same ceiling as Envoy's max_request_headers_kb (deploy/envoy/envoy.yaml).
MAX_HEADER_BYTES = 32 * 1024


def _header_bytes(scope: Scope) -> int:
    """Size of the request line's target and every header, as sent."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size + sum(len(name) + len(value) for name, value in scope.get("headers", ()))


def _declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValidationError("The Content-Length header is not valid.")
    return int(value)


class RequestContextMiddleware:
    """See the module docstring; ``body_limit`` caps every request body in bytes."""

    def __init__(self, app: ASGIApp, body_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        ids = request_ids(headers.get(REQUEST_ID_HEADER))
        request_id = ids["requestId"]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started_at = time.perf_counter()
        is_api = str(scope.get("path", "")).startswith(API_PATH_PREFIX)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                if is_api and "cache-control" not in headers:
                    # Jobs, usage and errors are per user and change: never stored.
                    headers["Cache-Control"] = "no-store"
            await send(message)

        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_limit:
                    raise PayloadTooLarge("The request body is too large.")
            return message

        bind_context(**ids)
        try:
            if _header_bytes(scope) > MAX_HEADER_BYTES:
                too_large = error_response(
                    431, "VALIDATION_ERROR", "The request headers are too large."
                )
                await too_large(scope, receive, send_with_id)
                return
            declared = _declared_length(headers)
            if declared is not None and declared > self.body_limit:
                raise PayloadTooLarge("The request body is too large.")
            await self.app(scope, capped_receive, send_with_id)
        except (PayloadTooLarge, ValidationError) as error:
            # Raised here, before any route ran: answer directly.
            if not response_started:
                await domain_error_response(error)(scope, receive, send_with_id)
        except Exception:
            log.exception("http.unhandled_error")
            if not response_started:
                await internal_error_response()(scope, receive, send_with_id)
        finally:
            self._log_access(scope, status, started_at, ids)
            clear_context(*ids, "ownerId")

    @staticmethod
    def _log_access(scope: Scope, status: int, started_at: float, ids: dict[str, str]) -> None:
        route = scope.get("route")
        path = scope.get("path")
        template = getattr(route, "path", None) or (
            path if path == metrics.UPLOAD_ROUTE else UNMATCHED
        )
        owner_id = scope.get("state", {}).get("owner_id")
        metrics.record_answer(scope.get("method"), template, status)
        fields = {
            "method": scope.get("method"),
            "route": template,
            "status": status,
            "durationMs": round((time.perf_counter() - started_at) * 1000, 2),
            **ids,
        }
        if owner_id:
            fields["ownerId"] = owner_id
        if status >= 500:
            log.warning("http.request", **fields)
        else:
            log.info("http.request", **fields)
