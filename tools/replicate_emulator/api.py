"""Replicate's HTTP API (``/v1``) and the output file URLs."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from replicate_emulator.prediction import MODEL
from replicate_emulator.problems import (
    injected,
    not_found,
    problem,
    unauthenticated,
    validation_failed,
)
from replicate_emulator.state import Emulator, emulator_of
from replicate_emulator.validation import (
    MODEL_BODY_FIELDS,
    VERSION_BODY_FIELDS,
    InvalidField,
    known_version,
    parse_duration,
    validate_create,
)

# One preference of a Prefer header (RFC 7240: comma-separated, "respond-async" may
# stand beside it); Replicate takes wait=1..60.
_PREFER_WAIT = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")


def _prefer_wait(header: str) -> float | None:
    """Seconds a ``Prefer: wait[=N]`` asks the create to wait (N in 1..60), or None."""
    for preference in header.split(","):
        match = _PREFER_WAIT.match(preference)
        if match:
            seconds = int(match.group(1) or 60)
            return float(seconds) if 1 <= seconds <= 60 else None
    return None


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in {"bearer", "token"}:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _guard(
    request: Request, queue: Literal["create", "get", "cancel"] | None
) -> Response | None:
    """Latency, auth and injected errors, in that order; None means go on."""
    emulator = emulator_of(request)
    latency = emulator.faults.faults.latency_ms
    if latency:
        await asyncio.sleep(latency / 1000.0)
    if not _authorized(request, emulator.config.token):
        return unauthenticated()
    status = emulator.faults.take_error(queue) if queue else None
    if status is not None:
        return injected(status, emulator.faults.faults.retry_after_seconds)
    return None


def _prediction_response(emulator: Emulator, prediction_id: str, status: int) -> Response:
    prediction = emulator.engine.get(prediction_id)
    if prediction is None:
        return not_found()
    return JSONResponse(prediction.to_json(emulator.config.base_url), status_code=status)


async def _read_json(request: Request) -> tuple[Any, Response | None]:
    try:
        return await request.json(), None
    # Not JSON, not UTF-8, an integer past Python's digit limit (all ValueError), or
    # nested too deep to parse.
    except (ValueError, RecursionError):
        return None, problem(400, "The request body is not valid JSON.", title="Bad request")


async def _create(request: Request, body: Any, allowed: frozenset[str]) -> Response:
    emulator = emulator_of(request)
    create = validate_create(body, allowed)
    cancel_after: float | None = None
    if "cancel-after" in request.headers:
        cancel_after = parse_duration(request.headers["cancel-after"])
        if cancel_after is None:
            create.problems.append(
                InvalidField("format", "Cancel-After", "Expected a duration like 30s, 5m or 1h2m3s")
            )
        elif cancel_after < emulator.config.min_cancel_after_seconds:
            # Documented minimum 5 s; refused rather than raised, so a caller that
            # forgot its own floor finds out here.
            create.problems.append(
                InvalidField(
                    "minimum",
                    "Cancel-After",
                    f"Must be at least {emulator.config.min_cancel_after_seconds:g}s",
                )
            )
    if create.problems:
        return validation_failed(create.problems)
    prediction = emulator.engine.create(create, cancel_after)
    late = emulator.faults.faults.create_answer_delay_ms
    if late:
        # The run has started whether or not the caller waits for this answer.
        await asyncio.sleep(late / 1000.0)
    wait = _prefer_wait(request.headers.get("prefer", ""))
    if wait is not None:
        seconds = min(wait, emulator.config.prefer_wait_max_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(prediction.done.wait(), seconds)
    return JSONResponse(prediction.to_json(emulator.config.base_url), status_code=201)


async def create_for_model(request: Request) -> Response:
    """POST /v1/models/{owner}/{name}/predictions."""
    if (refused := await _guard(request, "create")) is not None:
        return refused
    model = f"{request.path_params['owner']}/{request.path_params['name']}"
    if model != MODEL:
        return not_found()
    body, error = await _read_json(request)
    return error or await _create(request, body, MODEL_BODY_FIELDS)


async def create_for_version(request: Request) -> Response:
    """POST /v1/predictions with a ``version``."""
    if (refused := await _guard(request, "create")) is not None:
        return refused
    body, error = await _read_json(request)
    if error is not None:
        return error
    if isinstance(body, dict) and "version" in body and not known_version(body["version"]):
        return problem(
            422,
            "Invalid version or not permitted",
            title="Invalid version or not permitted",
            invalid_fields=[InvalidField("invalid", "version", "Unknown version").to_json()],
        )
    if isinstance(body, dict) and "version" not in body:
        return validation_failed([InvalidField("required", "version", "version is required")])
    return await _create(request, body, VERSION_BODY_FIELDS)


async def get_prediction(request: Request) -> Response:
    """GET /v1/predictions/{id}."""
    if (refused := await _guard(request, "get")) is not None:
        return refused
    return _prediction_response(emulator_of(request), request.path_params["id"], 200)


async def cancel_prediction(request: Request) -> Response:
    """POST /v1/predictions/{id}/cancel; terminal predictions come back unchanged."""
    if (refused := await _guard(request, "cancel")) is not None:
        return refused
    emulator = emulator_of(request)
    emulator.engine.cancel(request.path_params["id"])
    return _prediction_response(emulator, request.path_params["id"], 200)


async def webhook_secret(request: Request) -> Response:
    """GET /v1/webhooks/default/secret."""
    if (refused := await _guard(request, None)) is not None:
        return refused
    return JSONResponse({"key": emulator_of(request).config.webhook_secret})


async def output_file(request: Request) -> Response:
    """GET /files/{id}/{name}: the generated image, like replicate.delivery (no auth)."""
    emulator = emulator_of(request)
    delay = emulator.faults.faults.output_delay_ms
    if delay:
        await asyncio.sleep(delay / 1000.0)
    status = emulator.faults.take_error("output")
    if status is not None:
        return injected(status, emulator.faults.faults.retry_after_seconds)
    file = emulator.files.get(request.path_params["id"], request.path_params["name"])
    if file is None:
        return not_found()
    return Response(file.data, media_type=file.content_type)


routes = [
    Route("/v1/models/{owner}/{name}/predictions", create_for_model, methods=["POST"]),
    Route("/v1/predictions", create_for_version, methods=["POST"]),
    Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
    Route("/v1/webhooks/default/secret", webhook_secret, methods=["GET"]),
    Route("/files/{id}/{name}", output_file, methods=["GET"]),
]
