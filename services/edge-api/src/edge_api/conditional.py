"""Conditional GETs: does a request's ``If-None-Match`` name the current ``ETag``?"""

from __future__ import annotations

from starlette.requests import Request


def not_modified(request: Request, etag: str) -> bool:
    """True when ``If-None-Match`` holds ``etag`` or ``*``.

    The comparison is weak (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``. A proxy or CDN
    that compresses an answer marks its ETag weak, and its revalidations must still hit.
    """
    for tag in request.headers.get("if-none-match", "").split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
