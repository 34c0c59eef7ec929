"""The reference web client: ``/`` (index.html) and ``/app/<file>`` (its CSS and modules).

Mounted only in development or with ``WEB_CLIENT_ENABLED=true``. Only the files
shipped in ``edge_api/web`` with a known extension are served (names are matched
against a listing taken at start, so no traversal can reach anything else).
Every answer carries a Content-Security-Policy allowing scripts and styles from
this origin only, API calls to this origin, and images from here, the public
render origin and local ``blob:`` previews.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Response

from edge_api.state import State
from kit.errors import NotFound

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


def content_security_policy(public_base_url: str | None) -> str:
    """The page's policy: 'self' for code and API calls; images also from the render origin."""
    images = ["'self'", "blob:"]
    if public_base_url:
        parts = urlsplit(public_base_url)
        images.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
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
        "Content-Security-Policy": content_security_policy(state.settings.s3_public_base_url),
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
