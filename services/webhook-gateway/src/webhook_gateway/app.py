"""The composition root: settings + runtime config -> a Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from kit.clock import Clock, SystemClock
from kit.logging import get_logger
from kit.metrics import install_http_metrics
from kit.runtime_config import RuntimeConfig, load_runtime_config
from kit.service_identity import WEBHOOK_GATEWAY
from kit.tracing import instrument_asgi
from webhook_gateway.forwarder import GenerationForwarder
from webhook_gateway.middleware import RequestIdMiddleware
from webhook_gateway.responses import http_exception_handler, internal_error_handler
from webhook_gateway.routes import ReadinessEndpoint, WebhookEndpoint, healthz
from webhook_gateway.settings import GatewaySettings
from webhook_gateway.signatures import WebhookVerifier

# Room for the body plus the request's framing; the body cap is the real limit.
_MESSAGE_OVERHEAD_BYTES = 64 * 1024


def create_app(
    settings: GatewaySettings,
    *,
    runtime_config: RuntimeConfig | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """The gateway app; its lifespan opens and closes the channel to generation.

    ``runtime_config`` defaults to the file named by the settings; ``clock`` to the
    system clock (tests move it to replay old deliveries).
    """
    config = runtime_config or load_runtime_config(settings.runtime_config_file)
    log = get_logger("webhook_gateway.app")
    secret = settings.webhook_secret()
    verifier = None
    if secret:
        verifier = WebhookVerifier(
            secret,
            tolerance_seconds=settings.webhook_tolerance_seconds,
            clock=clock or SystemClock(),
        )
    forwarder = GenerationForwarder(
        settings.generation_grpc_target,
        deadline_seconds=settings.grpc_deadline_seconds,
        max_message_bytes=settings.webhook_max_body_bytes + _MESSAGE_OVERHEAD_BYTES,
        signer=settings.service_identity(WEBHOOK_GATEWAY).signer,
    )
    webhook = WebhookEndpoint(
        verifier=verifier, forwarder=forwarder, max_body_bytes=settings.webhook_max_body_bytes
    )
    readiness = ReadinessEndpoint(forwarder, settings.ready_check_deadline_seconds)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if verifier is None:
            log.warning("gateway.insecure", message="webhook signatures are not checked")
        await forwarder.open()
        log.info("gateway.started", webhookPath=config.replicate.webhook_path)
        try:
            yield
        finally:
            await forwarder.close()
            log.info("gateway.stopped")

    app = Starlette(
        routes=[
            Route(config.replicate.webhook_path, webhook.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readiness.handle, methods=["GET"]),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            HTTPException: http_exception_handler,
            Exception: internal_error_handler,
        },
        lifespan=lifespan,
    )
    # Replicate follows no redirects: `/path/` must be a 404, not a 307 to `/path`.
    app.router.redirect_slashes = False
    # GET /metrics on the gateway's own port; Envoy routes only the webhook path here.
    install_http_metrics(app)
    instrument_asgi(app)  # outermost: the span covers the whole request
    return app
