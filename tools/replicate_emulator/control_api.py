"""The control API under ``/_emulator/``: knobs, resets and inspection for tests.

Not part of Replicate's API, so no auth and plain JSON errors ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from replicate_emulator.engine import AdvanceRefused
from replicate_emulator.state import emulator_of

ADVANCE_STATUSES = frozenset({"processing", "succeeded", "failed", "canceled", "aborted"})


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


async def health(request: Request) -> Response:
    """GET /_emulator/health: for readiness checks."""
    return JSONResponse({"status": "ok"})


async def get_faults(request: Request) -> Response:
    """GET /_emulator/faults: the current knobs."""
    return JSONResponse(emulator_of(request).faults.faults.model_dump())


async def set_faults(request: Request) -> Response:
    """POST /_emulator/faults: a partial update; unknown knobs are refused."""
    changes = await _json_object(request)
    if changes is None:
        return _error(400, "expected a JSON object")
    try:
        faults = emulator_of(request).faults.update(changes)
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False, include_input=False))
        return JSONResponse({"detail": "invalid fault knobs", "errors": errors}, status_code=400)
    return JSONResponse(faults.model_dump())


async def reset(request: Request) -> Response:
    """POST /_emulator/reset: knobs, predictions, files and deliveries."""
    await emulator_of(request).reset()
    return JSONResponse({"status": "reset"})


async def list_predictions(request: Request) -> Response:
    """GET /_emulator/predictions: every prediction, oldest first, as GET shows it."""
    emulator = emulator_of(request)
    base = emulator.config.base_url
    return JSONResponse([p.to_json(base) for p in emulator.engine.all()])


async def get_prediction(request: Request) -> Response:
    """GET /_emulator/predictions/{id}."""
    emulator = emulator_of(request)
    prediction = emulator.engine.get(request.path_params["id"])
    if prediction is None:
        return _error(404, "unknown prediction")
    return JSONResponse(prediction.to_json(emulator.config.base_url))


async def advance(request: Request) -> Response:
    """POST /_emulator/predictions/{id}/advance {"status": ...}: move it now."""
    emulator = emulator_of(request)
    prediction = emulator.engine.get(request.path_params["id"])
    if prediction is None:
        return _error(404, "unknown prediction")
    body = await _json_object(request)
    if body is None or body.get("status") not in ADVANCE_STATUSES:
        return _error(400, f"expected {{'status': one of {sorted(ADVANCE_STATUSES)}}}")
    try:
        await emulator.engine.advance(prediction, body["status"])
    except AdvanceRefused as exc:
        return _error(409, str(exc))
    return JSONResponse(prediction.to_json(emulator.config.base_url))


async def list_webhooks(request: Request) -> Response:
    """GET /_emulator/webhooks[?prediction_id=...]: every delivery attempt, in order."""
    entries = emulator_of(request).webhooks.log.entries
    wanted = request.query_params.get("prediction_id")
    return JSONResponse([e for e in entries if wanted is None or e["prediction_id"] == wanted])


async def redeliver(request: Request) -> Response:
    """POST /_emulator/webhooks/redeliver {"prediction_id", "event", "webhook_id"?}."""
    body = await _json_object(request)
    if body is None or not all(isinstance(body.get(k), str) for k in ("prediction_id", "event")):
        return _error(400, 'expected {"prediction_id": "...", "event": "..."}')
    webhook_id = body.get("webhook_id")
    entry = await emulator_of(request).webhooks.redeliver(
        body["prediction_id"], body["event"], webhook_id if isinstance(webhook_id, str) else None
    )
    if entry is None:
        return _error(404, "no such delivery")
    return JSONResponse(entry)


routes = [
    Route("/_emulator/health", health, methods=["GET"]),
    Route("/_emulator/faults", get_faults, methods=["GET"]),
    Route("/_emulator/faults", set_faults, methods=["POST"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
    Route("/_emulator/predictions", list_predictions, methods=["GET"]),
    Route("/_emulator/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/_emulator/predictions/{id}/advance", advance, methods=["POST"]),
    Route("/_emulator/webhooks", list_webhooks, methods=["GET"]),
    Route("/_emulator/webhooks/redeliver", redeliver, methods=["POST"]),
]
