"""Error answers in Replicate's shape: ``application/problem+json``."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from replicate_emulator.validation import InvalidField

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json answer ``{title?, detail, status, ...extra}``."""
    body: dict[str, Any] = {}
    if title is not None:
        body["title"] = title
    body["detail"] = detail
    body["status"] = status
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def unauthenticated() -> JSONResponse:
    """401 for a missing or wrong token."""
    return problem(401, "You did not pass a valid authentication token", title="Unauthenticated")


def not_found() -> JSONResponse:
    """404 for an unknown model or prediction."""
    return problem(404, "The requested resource could not be found.", title="Not found")


def validation_failed(fields: list[InvalidField]) -> JSONResponse:
    """422 with ``invalid_fields``, as Replicate sends for a bad body."""
    detail = "".join(f"- {f.field}: {f.description}\n" for f in fields)
    return problem(
        422,
        detail,
        title="Input validation failed",
        invalid_fields=[f.to_json() for f in fields],
    )


def injected(status: int, retry_after_seconds: float | None) -> JSONResponse:
    """The answer for an injected fault ``status`` (429, 5xx, or any other)."""
    if status == 429:
        # One figure for the header and the detail: whole seconds, at least one.
        wait = max(1, math.ceil(retry_after_seconds or 1))
        headers = None if retry_after_seconds is None else {"Retry-After": str(wait)}
        return problem(
            429,
            f"Request was throttled. Expected available in {wait} second{'s' if wait > 1 else ''}.",
            headers=headers,
        )
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return problem(status, f"{title} (injected by the emulator)", title=title)
