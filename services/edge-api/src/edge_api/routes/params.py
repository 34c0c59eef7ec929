"""What several routes take from a request: a job id in the path, and the bases the
URLs they build start with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from edge_api.base_url import request_base_url
from edge_api.state import EdgeState
from kit.errors import NotFound
from kit.ids import UUID_PATTERN, is_canonical_uuid

# The pattern is documented only: FastAPI would answer 400, and anything else is 404.
JobId = Annotated[
    str,
    Path(
        description="The job id (a UUID); anything else is 404.",
        json_schema_extra={"pattern": UUID_PATTERN},
    ),
]


def canonical_job_id(raw: str) -> str:
    """A canonical job id; anything that is not a UUID is simply not found."""
    if not is_canonical_uuid(raw):
        raise NotFound()
    return raw.lower()


def entry_base(state: EdgeState, request: Request) -> str:
    """``scheme://host[:port]`` clients reach the API at: PUBLIC_BASE_URL when set,
    else what the (trusted) forwarding headers say."""
    return state.settings.public_base_url or request_base_url(request, state.trusted_proxies)


def public_base(state: EdgeState, request: Request) -> str:
    """Where variant URLs point: the CDN / bucket base or the edge's /public."""
    configured = state.settings.s3_public_base_url
    if configured:
        return configured.rstrip("/")
    return entry_base(state, request) + "/public"
