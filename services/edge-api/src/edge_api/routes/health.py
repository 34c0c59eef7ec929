"""Liveness and readiness probes (no auth, outside /api/v1)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2

from edge_api.schemas import HealthOut, ReadyOut
from edge_api.state import State
from interior.generation.v1 import generation_pb2
from interior.usage.v1 import usage_pb2

router = APIRouter(tags=["health"])

GENERATION_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
USAGE_SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name


@router.get("/healthz", summary="Liveness")
async def healthz() -> HealthOut:
    """The process is up and serving HTTP."""
    return HealthOut(status="ok")


async def _check(stub: Any, service: str, deadline: float) -> str:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=deadline)
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "A backend service is not serving."}},
)
async def readyz(state: State) -> JSONResponse:
    """Ready when the generation and usage services both report SERVING."""
    clients = state.connected()
    deadline = state.settings.readiness_deadline_seconds
    generation, usage = await asyncio.gather(
        _check(clients.generation_health, GENERATION_SERVICE, deadline),
        _check(clients.usage_health, USAGE_SERVICE, deadline),
    )
    ready = generation == usage == "SERVING"
    body = ReadyOut(
        status="ready" if ready else "unavailable",
        checks={"generation": generation, "usage": usage},
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
