"""JSON answers: the project's error body, and the error handlers for Starlette."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kit.logging import get_logger

log = get_logger("webhook_gateway.responses")

_HTTP_CODES = {
    400: ("VALIDATION_ERROR", "The request is not valid."),
    404: ("NOT_FOUND", "Not found."),
    405: ("METHOD_NOT_ALLOWED", "This method is not allowed here."),
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": {"code", "message"}}`` with a safe, fixed message."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def http_exception_handler(_: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (and any other HTTPException) as the JSON error body."""
    if not isinstance(exc, HTTPException):
        return await internal_error_handler(_, exc)
    known = _HTTP_CODES.get(exc.status_code)
    if known is None:  # none is raised but routing's: anything else is ours, unexpected
        return await internal_error_handler(_, exc)
    code, message = known
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


async def internal_error_handler(_: Request, exc: Exception) -> Response:
    """Anything unexpected: a generic 500, never a stack trace in the answer."""
    log.error("http.unexpected_error", errorType=type(exc).__name__)
    return error_response(500, "INTERNAL_ERROR", "Something went wrong. Please try again.")
