"""The application factory: routes, error handling, middleware, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edge_api.admission import UploadAdmission
from edge_api.auth import TokenVerifier
from edge_api.clients import Clients, open_clients
from edge_api.cors import ApiCorsMiddleware
from edge_api.errors import install_error_handlers
from edge_api.feed import JobFeed, Timings
from edge_api.jwks import JwksKeys
from edge_api.middleware import RequestContextMiddleware
from edge_api.openapi import install_openapi
from edge_api.routes import (
    API_PREFIX,
    catalog,
    events,
    generations,
    health,
    history,
    public,
    usage,
    web,
)
from edge_api.settings import EdgeSettings
from edge_api.settled import SettledJobs
from edge_api.state import EdgeState
from kit.logging import get_logger
from kit.metrics import install_http_metrics
from kit.runtime_config import RuntimeConfig
from kit.tracing import instrument_asgi

log = get_logger("edge_api.app")

API_VERSION = "1.0.0"
DESCRIPTION = (
    "The public REST API of the interior design generator. Every route but the health "
    "probes and public files needs `Authorization: Bearer <JWT>`. Every answer carries "
    '`X-Request-ID`; every error body is `{"error": {"code", "message"}}`.'
)


def create_app(
    settings: EdgeSettings, runtime_config: RuntimeConfig, clients: Clients | None = None
) -> FastAPI:
    """Build the app. Without ``clients`` the lifespan opens (and closes) its own."""
    jwks = jwks_keys(settings)
    state = EdgeState(
        settings=settings,
        runtime_config=runtime_config,
        token_verifier=token_verifier(settings, jwks),
        jwks=jwks,
        clients=clients,
        trusted_proxies=settings.trusted_proxies(),
        uploads=UploadAdmission(
            slots=settings.max_concurrent_submissions,
            per_user=settings.max_uploads_per_user,
            slot_wait_seconds=settings.upload_slot_wait_seconds,
            retry_after_seconds=settings.upload_retry_after_seconds,
        ),
        catalog=catalog.CatalogAnswer(runtime_config),
        feed=JobFeed(
            lambda: state.connected().generation,
            SettledJobs(
                settings.settled_cache_entries,
                # A kept view's signed input URLs keep at least half their lifetime.
                max_age=runtime_config.uploads.signed_url_ttl_seconds / 2,
                freshness=settings.feed_freshness_seconds,
            ),
            Timings(
                heartbeat=settings.sse_heartbeat_seconds,
                refresh=settings.sse_refresh_seconds
                or runtime_config.timings.stale_after_ms / 1000,
                silence=settings.feed_silence_seconds,
            ),
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned = state.clients is None
        if owned:
            state.clients = open_clients(settings)
        if jwks is not None:
            # A failure is logged, not fatal: keys are fetched again on the first token.
            await jwks.refresh()
        log.info("edge.started", servesPublicFiles=settings.s3_public_base_url is None)
        try:
            yield
        finally:
            if jwks is not None:
                await jwks.aclose()
            await state.feed.close()
            if owned and state.clients is not None:
                await state.clients.close()
                state.clients = None
            log.info("edge.stopped")

    app = FastAPI(
        title="Interior generations API",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.edge = state
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        body_limit=settings.request_limit(runtime_config.uploads.max_bytes),
    )
    # Outside the request context, so its early answers (413, 431) reach browsers too.
    app.add_middleware(ApiCorsMiddleware, origins=settings.cors_origins())
    # Outermost: counts the status clients got. GET /metrics is never routed by Envoy.
    install_http_metrics(app)
    app.include_router(generations.router)
    app.include_router(history.router)
    app.include_router(events.router)
    app.include_router(usage.router)
    app.include_router(catalog.router)
    app.include_router(health.router)
    if settings.s3_public_base_url is None:
        app.include_router(public.router)
    if settings.web_client_enabled or settings.development:
        web.content_security_policy(settings)  # a bad S3_ENDPOINT stops the start, not the page
        app.include_router(web.router)
    install_openapi(app, runtime_config)
    _build_routes(app)
    instrument_asgi(app)  # outermost: the span covers the whole request
    return app


def _build_routes(app: FastAPI) -> None:
    """FastAPI builds an included router's routes (and analyses their parameters)
    lazily, at the first request, from module-level routers every app of the process
    shares: built here, as the app is made, so the first requests of apps served in
    other threads (the test harnesses' second edges) never analyse one parameter at
    once. (Duck-typed: a FastAPI without lazy routes has nothing to build.)"""
    for route in app.router.routes:
        for name in ("effective_route_contexts", "effective_low_priority_routes"):
            build = getattr(route, name, None)
            if callable(build):
                for _ in build():
                    pass


def jwks_keys(settings: EdgeSettings) -> JwksKeys | None:
    """The JWKS cache of AUTH_JWKS_URL, or None when only HS256 tokens are accepted."""
    if settings.auth_jwks_url is None:
        return None
    return JwksKeys(
        settings.auth_jwks_url,
        timeout_seconds=settings.auth_jwks_timeout_seconds,
        min_refetch_seconds=settings.auth_jwks_min_refetch_seconds,
        max_age_seconds=settings.auth_jwks_max_age_seconds,
    )


def token_verifier(settings: EdgeSettings, jwks: JwksKeys | None) -> TokenVerifier:
    """The verifier of user tokens, as the settings configure it."""
    return TokenVerifier(
        secret=settings.jwt_secret(),
        jwks=jwks,
        leeway_seconds=settings.auth_leeway_seconds,
        issuer=settings.auth_jwt_issuer,
        allow_anonymous=settings.auth_anonymous_users == "zero_plan",
    )
