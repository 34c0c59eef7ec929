"""Prometheus metrics every service shares: per-rpc, per-route, and the exporters.

gRPC services get :class:`MetricsInterceptor` from :mod:`kit.grpc_server` and
serve ``GET /metrics`` on a port of their own with :func:`start_metrics_server`.
HTTP services call :func:`install_http_metrics`: a middleware that counts every
request by route *template* (never the raw path, which carries ids) and a
``GET /metrics`` route on the app's own port; Envoy routes only the public
prefixes, so ``/metrics`` is not reachable from outside.

Every label has a bounded set of values: method names, route templates, status
codes. Ids (jobs, owners, predictions) never become label values.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.grpc_interceptors import Behaviour, StreamingBehaviour, _WrappingInterceptor
from kit.logging import get_logger

log = get_logger("kit.metrics")

# Seconds; wide enough for a submission (uploads + provider create) at the top end.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METRICS_PATH = "/metrics"
# A request that matched no route is counted under this template.
UNMATCHED_ROUTE = "unmatched"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and gRPC status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to complete an RPC, by method.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "http_server_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_server_request_duration_seconds",
    "Time taken to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)


def _split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _grpc_code_name(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    # No code set: a normal return is OK; an escaping error (e.g. the caller cancelled).
    return "CANCELLED" if failed else "OK"


class MetricsInterceptor(_WrappingInterceptor):
    """Counts every RPC by method and final status code, and times it."""

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        service, name = _split_method(method)
        latency = GRPC_HANDLING_SECONDS.labels(grpc_service=service, grpc_method=name)

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            failed = True
            try:
                result = await behaviour(request, context)
                failed = False
                return result
            finally:
                latency.observe(time.perf_counter() - started)
                code = _grpc_code_name(context, failed)
                GRPC_HANDLED.labels(grpc_service=service, grpc_method=name, grpc_code=code).inc()

        return handle

    def wrap_streaming(self, behaviour: StreamingBehaviour, method: str) -> StreamingBehaviour:
        """Counted like the others; not timed (a stream lasts minutes by design, and its
        duration would only fill the latency histogram's last bucket)."""
        service, name = _split_method(method)

        async def handle(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            failed = True
            try:
                async with contextlib.aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response
                failed = False
            finally:
                code = _grpc_code_name(context, failed)
                GRPC_HANDLED.labels(grpc_service=service, grpc_method=name, grpc_code=code).inc()

        return handle


@dataclass
class MetricsServer:
    """A running exporter thread (``GET /metrics`` of the default registry)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> MetricsServer | None:
    """Serve the default registry on ``host:port`` in a daemon thread; ``port=0`` turns it off.

    A port that cannot be bound is logged as an error and the service runs on
    without an exporter: losing metrics must not take the service down (the
    scrape target shows as down, which is what alerts watch).
    """
    if port == 0:
        log.info("metrics.disabled")
        return None
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as error:
        log.error("metrics.unavailable", host=host, port=port, error=type(error).__name__)
        return None
    log.info("metrics.listening", host=host, port=server.server_port)
    return MetricsServer(server, thread)


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that handled (or would handle) the request.

    Routing records the matched route in the scope; a request answered before
    routing (e.g. a body refused by ``Content-Length``) is matched here instead.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    for route in routes:
        match, _ = route.matches(scope)
        candidate = getattr(route, "path", None)
        if match is not Match.NONE and isinstance(candidate, str):
            return candidate
    return UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """Pure ASGI: counts and times each HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Unless a response starts, the server answers an escaping error with a 500.
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            method = str(scope.get("method", ""))
            method = method if method in HTTP_METHODS else "OTHER"
            route = route_template(scope, self.routes)
            HTTP_REQUEST_SECONDS.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the default registry, in the format the scraper asks for."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), headers={"Content-Type": content_type})


def install_http_metrics(app: Starlette, path: str = METRICS_PATH) -> None:
    """Add the request metrics middleware (outermost) and ``GET path`` to ``app``.

    Call it after the app's own middleware so the recorded status is the one
    the client got.
    """
    app.add_middleware(HttpMetricsMiddleware, routes=app.routes)
    app.add_route(path, metrics_endpoint, methods=["GET"], include_in_schema=False)
