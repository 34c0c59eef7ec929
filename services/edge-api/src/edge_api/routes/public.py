"""Public renders, served by the edge itself while S3_PUBLIC_BASE_URL is unset.

Only ``/public/renders/<renderUuid>/<idx>.jpg`` exists: both parts are checked
with strict patterns, so no other key (and no traversal or listing) can be
reached. Objects are immutable, so they are cached for a year.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from edge_api.openapi import errors
from edge_api.state import EdgeState, State
from kit.errors import NotFound
from kit.storage import ObjectStorage

router = APIRouter(tags=["public"])

_RENDER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_FILE_NAME = re.compile(r"^(0|[1-9][0-9]{0,2})\.jpg$")
CACHE_CONTROL = "public, max-age=31536000, immutable"
_JPEG = "image/jpeg"


def _object_key(render_id: str, file_name: str) -> str:
    if not _RENDER_ID.fullmatch(render_id) or not _FILE_NAME.fullmatch(file_name):
        raise NotFound()
    return f"renders/{render_id}/{file_name}"


def _etag(key: str, size: int) -> str:
    # Keys are never rewritten with other bytes, so key + size identify the content.
    return '"' + hashlib.sha256(f"{key}:{size}".encode()).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str) -> bool:
    candidates = request.headers.get("if-none-match", "")
    return any(tag.strip() in (etag, "*") for tag in candidates.split(","))


_PATH = "/public/renders/{render_id}/{file_name}"
# Documented only (not validated by FastAPI, which would answer 400): anything else is 404.
RenderId = Annotated[
    str,
    Path(
        description="The render id (a lowercase UUID).",
        json_schema_extra={"pattern": _RENDER_ID.pattern},
    ),
]
FileName = Annotated[
    str,
    Path(description="`<idx>.jpg`, idx 0-999.", json_schema_extra={"pattern": _FILE_NAME.pattern}),
]


@router.get(
    _PATH,
    summary="A public render image",
    response_class=Response,
    responses={
        200: {"content": {_JPEG: {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "Not modified (If-None-Match)."},
        **errors(404, 503),
    },
)
async def get_render(
    render_id: RenderId, file_name: FileName, request: Request, state: State
) -> Response:
    """The JPEG at `renders/<render_id>/<idx>.jpg` in the public bucket."""
    key = _object_key(render_id, file_name)
    data = await _storage(state).get_bytes(
        state.settings.s3_public_bucket, key, state.runtime_config.replicate.output_max_bytes
    )
    if data is None:
        raise NotFound()
    return _answer(request, key, len(data), data)


@router.head(_PATH, include_in_schema=False)
async def head_render(render_id: str, file_name: str, request: Request, state: State) -> Response:
    """Headers of :func:`get_render` from the object's metadata (no download)."""
    key = _object_key(render_id, file_name)
    stored = await _storage(state).stat(state.settings.s3_public_bucket, key)
    if stored is None:
        raise NotFound()
    return _answer(request, key, stored.size, b"")


def _storage(state: EdgeState) -> ObjectStorage:
    storage = state.connected().storage
    if storage is None:
        raise NotFound()
    return storage


def _answer(request: Request, key: str, size: int, body: bytes) -> Response:
    etag = _etag(key, size)
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(size)
    return Response(body, media_type=_JPEG, headers=headers)
