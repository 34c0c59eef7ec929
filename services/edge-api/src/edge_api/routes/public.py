"""Public renders, served by the edge itself while S3_PUBLIC_BASE_URL is unset.

Only ``/public/renders/<renderUuid>/<idx>.jpg`` exists: both parts are checked
with strict patterns, so no other key (and no traversal or listing) can be
reached. A render's files are removed when its job is deleted, so caches may
keep one only for a minute (revalidating by ETag after that), never a year.
Bodies are streamed from storage chunk by chunk, so memory stays flat whatever
the object's size, and every answer says ``nosniff`` so a browser never treats a
file as anything but what its Content-Type says.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from edge_api.conditional import not_modified
from edge_api.errors import domain_error_response
from edge_api.openapi import errors
from edge_api.state import EdgeState, State
from kit.errors import NotFound
from kit.ids import LOWERCASE_UUID_PATTERN, is_canonical_uuid
from kit.storage import ObjectStorage, ObjectStream

router = APIRouter(tags=["public"])

# A variant (<idx>.jpg) or its thumbnail (<idx>.thumb.jpg).
_FILE_NAME = re.compile(r"^(0|[1-9][0-9]{0,2})(\.thumb)?\.jpg$")
# Deletion removes files within 60 s; a cache may add at most this much on top.
CACHE_CONTROL = "public, max-age=60"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_JPEG = "image/jpeg"


def _object_key(render_id: str, file_name: str) -> str:
    # Lowercase only: the one spelling of a key in storage.
    if not is_canonical_uuid(render_id, lowercase=True) or not _FILE_NAME.fullmatch(file_name):
        raise NotFound()
    return f"renders/{render_id}/{file_name}"


def _etag(key: str, size: int) -> str:
    # A key is only ever (re)written with the same bytes, so key + size identify them.
    return '"' + hashlib.sha256(f"{key}:{size}".encode()).hexdigest()[:32] + '"'


_PATH = "/public/renders/{render_id}/{file_name}"
# Documented only (not validated by FastAPI, which would answer 400): anything else is 404.
RenderId = Annotated[
    str,
    Path(
        description="The render id (a lowercase UUID).",
        json_schema_extra={"pattern": LOWERCASE_UUID_PATTERN},
    ),
]
FileName = Annotated[
    str,
    Path(
        description="`<idx>.jpg` (idx 0-999), or `<idx>.thumb.jpg` for its thumbnail.",
        json_schema_extra={"pattern": _FILE_NAME.pattern},
    ),
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
    try:
        key = _object_key(render_id, file_name)
        storage = _storage(state)
        bucket = state.settings.s3_public_bucket
        if request.headers.get("if-none-match"):
            # A revalidation usually ends in a 304: ask for the facts, not the body.
            stored = await storage.stat(bucket, key)
            if stored is not None and not_modified(request, _etag(key, stored.size)):
                return _answer(request, key, stored.size, b"")
        stream = await storage.open_stream(bucket, key)
        if stream is None:
            raise NotFound()
    except NotFound as error:
        return _not_found(error)
    return _StreamedObject(stream, _headers(key, stream.size))


@router.head(_PATH, include_in_schema=False)
async def head_render(render_id: str, file_name: str, request: Request, state: State) -> Response:
    """Headers of :func:`get_render` from the object's metadata (no download)."""
    try:
        key = _object_key(render_id, file_name)
        stored = await _storage(state).stat(state.settings.s3_public_bucket, key)
        if stored is None:
            raise NotFound()
    except NotFound as error:
        return _not_found(error)
    return _answer(request, key, stored.size, b"")


def _storage(state: EdgeState) -> ObjectStorage:
    storage = state.connected().storage
    if storage is None:
        raise NotFound()
    return storage


def _not_found(error: NotFound) -> Response:
    response = domain_error_response(error)
    response.headers.update(NOSNIFF)
    return response


def _headers(key: str, size: int) -> dict[str, str]:
    return {"Cache-Control": CACHE_CONTROL, "ETag": _etag(key, size), **NOSNIFF}


def _answer(request: Request, key: str, size: int, body: bytes) -> Response:
    headers = _headers(key, size)
    if not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(size)
    return Response(body, media_type=_JPEG, headers=headers)


class _StreamedObject(StreamingResponse):
    """Streams an open object to the client and closes it however the send ends.

    Closing here, around the whole send, covers what a generator's own
    ``finally`` would not run promptly: a client that disconnects mid-body, a
    cancelled request, or an error before the first chunk.
    """

    def __init__(self, stream: ObjectStream, headers: dict[str, str]) -> None:
        super().__init__(
            stream.chunks(),
            media_type=_JPEG,
            headers={**headers, "Content-Length": str(stream.size)},
        )
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()
