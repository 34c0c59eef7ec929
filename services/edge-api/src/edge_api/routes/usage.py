"""GET /usage: the caller's plan and month."""

from __future__ import annotations

from fastapi import APIRouter

from edge_api.anonymous import zero_plan
from edge_api.auth import Authenticated
from edge_api.mappers import quota_to_json
from edge_api.openapi import errors
from edge_api.routes import API_PREFIX
from edge_api.schemas import QuotaOut
from edge_api.state import State
from interior.usage.v1 import usage_pb2
from kit.grpc_client import outgoing_metadata

router = APIRouter(prefix=API_PREFIX, tags=["usage"])


@router.get("/usage", summary="The caller's quota", responses=errors(401, 500, 503))
async def get_usage(caller: Authenticated, state: State) -> QuotaOut:
    """``{plan, monthlyGenerations, used, remaining, periodStart, periodEnd}``."""
    if caller.anonymous:
        return zero_plan()
    quota = await state.connected().usage.GetQuota(
        usage_pb2.GetQuotaRequest(owner_id=caller.owner_id),
        timeout=state.rpc_timeout(),
        metadata=outgoing_metadata(),
    )
    return quota_to_json(quota)


# RFC 9110 9.1: HEAD wherever GET (uvicorn sends the headers without the body).
router.head("/usage", include_in_schema=False)(get_usage)
