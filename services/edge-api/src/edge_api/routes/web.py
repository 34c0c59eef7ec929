"""The reference web client: ``/`` (index.html) and ``/app/<file>`` (its CSS and modules).

Mounted only in development or with ``WEB_CLIENT_ENABLED=true``. Only the files
shipped in ``edge_api/web`` with a known extension are served (names are matched
against a listing taken at start, so no traversal can reach anything else).
Every answer carries a Content-Security-Policy allowing scripts and styles from
this origin only, API calls to this origin, and images from here, the public
render origin, the S3 endpoint (the signed URLs of the user's own input photos)
and local ``blob:`` previews.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Response

from edge_api.settings import EdgeSettings
from edge_api.state import State
from kit.errors import NotFound
from kit.settings import HOST_PORT

router = APIRouter(include_in_schema=False)

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Files change with a deploy; revalidation is cheap and avoids a stale mix of modules.
CACHE_CONTROL: Final = "no-cache"


def _shipped_files() -> dict[str, Path]:
    """Served name -> path of every file of the client, read once."""
    return {
        path.name: path
        for path in WEB_DIR.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


_FILES: Final = _shipped_files()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def s3_origin(settings: EdgeSettings) -> str:
    """The origin the signed input URLs point at: S3_SIGNED_BASE_URL, else the S3
    endpoint (minio SDK style)."""
    if settings.s3_signed_base_url is not None:
        return settings.s3_signed_base_url
    # S3_ENDPOINT is host[:port] (the minio SDK refuses a scheme); S3_SECURE picks it.
    # host[:port] only: nothing that could end or extend a CSP directive.
    if not HOST_PORT.fullmatch(settings.s3_endpoint):
        raise ValueError(f"S3_ENDPOINT {settings.s3_endpoint!r} is not host[:port]")
    scheme = "https" if settings.s3_secure else "http"
    return f"{scheme}://{settings.s3_endpoint}"


def content_security_policy(settings: EdgeSettings) -> str:
    """The page's policy: 'self' for code and API calls; images also from renders and S3."""
    images = ["'self'", "blob:"]
    if settings.s3_public_base_url:
        images.append(_origin(settings.s3_public_base_url))
    elif settings.public_base_url:  # the edge's own render links, maybe another origin
        images.append(settings.public_base_url)
    # Exactly the one S3 origin, never a wildcard: the signed "before" photos come from it.
    images.append(s3_origin(settings))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(dict.fromkeys(images))}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _file_response(name: str, state: State) -> Response:
    path = _FILES.get(name)
    if path is None:
        raise NotFound()
    headers = {
        "Content-Security-Policy": content_security_policy(state.settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": CACHE_CONTROL,
    }
    return Response(path.read_bytes(), media_type=CONTENT_TYPES[path.suffix], headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def index(state: State) -> Response:
    """The page (index.html)."""
    return _file_response("index.html", state)


@router.api_route("/app/{name}", methods=["GET", "HEAD"])
async def app_file(name: str, state: State) -> Response:
    """One stylesheet or JavaScript module of the page; anything else is 404."""
    if name == "index.html":
        raise NotFound()  # one address for the page
    return _file_response(name, state)
