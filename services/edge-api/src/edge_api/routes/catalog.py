"""GET /catalog: what a frontend needs to build its form, from the runtime config.

No authentication: it is product information. The body is built once (the
runtime config is fixed for the life of the process); its ETag is a digest of
the bytes, so a changed config is a new ETag and caches refresh within
``max-age``.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request, Response

from edge_api.conditional import not_modified
from edge_api.routes import API_PREFIX
from edge_api.schemas import (
    CatalogChoiceOut,
    CatalogModeOut,
    CatalogOut,
    CatalogPromptOut,
    CatalogUploadOut,
)
from edge_api.state import State
from kit.modes import MODE_RULES
from kit.runtime_config import RuntimeConfig

router = APIRouter(prefix=API_PREFIX, tags=["catalog"])

CACHE_CONTROL = "public, max-age=300"


def build_catalog(config: RuntimeConfig) -> CatalogOut:
    """The catalog of ``config``: modes, styles, room types and the limits the server enforces."""
    return CatalogOut(
        modes=[
            CatalogModeOut(key=rule.key, images=rule.images, prompt_required=rule.prompt_required)
            for rule in MODE_RULES
        ],
        styles=[CatalogChoiceOut(key=key, label=c.label) for key, c in config.styles.items()],
        room_types=[
            CatalogChoiceOut(key=key, label=c.label) for key, c in config.room_types.items()
        ],
        upload=CatalogUploadOut(
            max_bytes=config.uploads.max_bytes, types=list(config.uploads.accepted_mime_types)
        ),
        prompt=CatalogPromptOut(max_length=config.prompts.max_length),
    )


class CatalogAnswer:
    """The serialized catalog and its validator, computed once."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.body = build_catalog(config).model_dump_json(by_alias=True).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def answer(self, request: Request) -> Response:
        """200 with the body, or 304 when the client's copy is current; HEAD gets the
        same headers (its length included) without the body."""
        headers = {"ETag": self.etag, "Cache-Control": CACHE_CONTROL}
        if not_modified(request, self.etag):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(self.body))
            return Response(b"", media_type="application/json", headers=headers)
        return Response(self.body, media_type="application/json", headers=headers)


@router.get(
    "/catalog",
    summary="The form's choices and limits",
    response_model=CatalogOut,
    responses={304: {"description": "Not modified (If-None-Match)."}},
)
async def get_catalog(request: Request, state: State) -> Response:
    """Modes (images, prompt required), styles and room types with labels, upload and prompt
    limits: everything comes from the runtime config the server enforces."""
    return state.catalog.answer(request)


# RFC 9110 9.1: a general-purpose server supports HEAD wherever it supports GET; for a
# public, cacheable resource caches and link checkers use it (FastAPI adds none).
router.head("/catalog", include_in_schema=False)(get_catalog)
