"""GET /generations: the caller's history, newest first, one keyset page at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from edge_api.auth import Owner
from edge_api.mappers import job_to_json, status_message
from edge_api.openapi import errors
from edge_api.routes import API_PREFIX
from edge_api.routes.params import public_base
from edge_api.schemas import DigitsOnly, JobPageOut, JobStatusName
from edge_api.state import State
from interior.generation.v1 import generation_pb2
from kit.errors import ValidationError
from kit.grpc_client import outgoing_metadata

router = APIRouter(prefix=f"{API_PREFIX}/generations", tags=["generations"])

MAX_PAGE_SIZE = 100
_QUERY_PARAMETERS = frozenset({"limit", "cursor", "status"})
# Our cursors are far shorter; anything longer is not one of ours.
MAX_CURSOR_LENGTH = 512


@router.get(
    "",
    summary="List the caller's generations",
    description="Newest first (`createdAt`, then `id`, descending). Pass `nextCursor` back as "
    "`cursor` for the next page; jobs created meanwhile never make a page skip or repeat an "
    "older job. A bad `limit`, `status` or a tampered `cursor` is a 400.",
    responses=errors(400, 401, 500, 503),
)
async def list_generations(
    request: Request,
    owner_id: Owner,
    state: State,
    limit: Annotated[
        int,
        DigitsOnly,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Page size."),
    ] = 20,
    cursor: Annotated[
        str | None,
        # Empty is no cursor we issued: a client that sends a last page's null as ""
        # would otherwise get the first page again, for ever.
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description="`nextCursor` of the previous page.",
        ),
    ] = None,
    status: Annotated[JobStatusName | None, Query(description="Only jobs in this status.")] = None,
) -> JobPageOut:
    """One page of the caller's jobs."""
    names = [name for name, _ in request.query_params.multi_items()]
    if set(names) - _QUERY_PARAMETERS:
        # A misspelt parameter (``limt``) would page on silently as if it were absent.
        raise ValidationError("Unknown query parameter; use limit, cursor or status.")
    if len(names) != len(set(names)):
        # Only the last would count (``status=succeeded&status=failed`` is not "either"),
        # and an earlier bad value would never be checked.
        raise ValidationError("Give limit, cursor and status at most once each.")
    reply = await state.connected().generation.ListGenerations(
        generation_pb2.ListGenerationsRequest(
            owner_id=owner_id,
            page_size=limit,
            page_token=cursor or "",
            status=status_message(status) if status else generation_pb2.JOB_STATUS_UNSPECIFIED,
        ),
        timeout=state.rpc_timeout(),
        metadata=outgoing_metadata(),
    )
    base = public_base(state, request)
    return JobPageOut(
        items=[job_to_json(job, base) for job in reply.jobs],
        next_cursor=reply.next_page_token or None,
    )


# RFC 9110 9.1: HEAD wherever GET (uvicorn sends the headers without the body).
router.head("", include_in_schema=False)(list_generations)
