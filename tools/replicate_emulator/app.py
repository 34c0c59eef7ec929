"""The ASGI app: Replicate's API, the output files and the control API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from kit.logging import get_logger
from replicate_emulator import api, control_api
from replicate_emulator.config import EmulatorConfig
from replicate_emulator.problems import problem
from replicate_emulator.state import Emulator

_log = get_logger("replicate_emulator")


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in Replicate's problem+json shape too.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
    return problem(status, detail)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug of the emulator still answers as Replicate does (problem+json), and says so.
    _log.error("emulator.unexpected_error", error=type(exc).__name__, path=request.url.path)
    return problem(500, "Internal server error")


def create_app(config: EmulatorConfig) -> Starlette:
    """A new emulator app with its own state (predictions, knobs, deliveries)."""
    emulator = Emulator(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await emulator.close()
        _log.info("emulator.stopped")

    app = Starlette(
        routes=[*api.routes, *control_api.routes],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    return app
