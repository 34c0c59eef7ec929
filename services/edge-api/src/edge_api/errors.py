"""The one place that turns failures into HTTP statuses and the JSON error body.

Every error answer is ``{"error": {"code": ..., "message": ...}}`` (plus safe
extra keys such as ``periodEnd``). Sources: domain errors raised by the edge
itself, failed gRPC calls (decoded by :func:`kit.grpc_errors.from_rpc_error`),
FastAPI's request validation, Starlette's routing errors (404 / 405), storage
failures, and anything unexpected (a generic 500, never a stack trace).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from edge_api.statuses import http_status
from kit.errors import (
    RETRY_AFTER_DETAIL,
    DomainError,
    InternalError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from kit.grpc_errors import RemoteError, from_rpc_error
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("edge_api.errors")

# Codes for errors Starlette raises before a route runs.
_HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "VALIDATION_ERROR",
    415: "VALIDATION_ERROR",
}
_HTTP_MESSAGES = {
    404: "Not found.",
    405: "This method is not allowed here.",
}
# Extra keys from an upstream ErrorInfo must look like ours (camelCase, short).
_DETAIL_KEY = re.compile(r"^[a-z][A-Za-z0-9]{0,63}$")
# Never body keys: the body's own, and what travels only to become a header.
_RESERVED_KEYS = frozenset({"code", "message", RETRY_AFTER_DETAIL})
_MAX_DETAIL_VALUE = 200


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer; ``details`` become extra keys of the error object."""
    body: dict[str, str] = {"code": code, "message": message}
    for key, value in (details or {}).items():
        safe_key = key not in _RESERVED_KEYS and _DETAIL_KEY.fullmatch(key)
        if safe_key and len(value) <= _MAX_DETAIL_VALUE:
            body[key] = value
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=status, headers=all_headers)


def internal_error_response() -> JSONResponse:
    """The generic 500 answer for anything unexpected."""
    error = InternalError()
    return error_response(http_status(error.reason), error.code, error.message)


def domain_error_response(error: DomainError) -> JSONResponse:
    """The answer for an error the edge raised itself."""
    if isinstance(error, InternalError):
        return internal_error_response()
    return error_response(
        http_status(error.reason), error.code, error.message, error.details, _error_headers(error)
    )


def _error_headers(error: DomainError) -> dict[str, str]:
    if isinstance(error, TooManyRequests):
        return {"Retry-After": str(error.retry_after_seconds)}
    if isinstance(error, RequestTimeout):
        # RFC 9110 15.5.9: the rest of the body was never read, so the connection is done.
        return {"Connection": "close"}
    return {}


def remote_error_response(error: RemoteError) -> JSONResponse:
    """The answer for a failed gRPC call: its reason decides the status (edge_api.statuses)."""
    status = http_status(error.reason)
    if status >= 500:
        log.warning(
            "upstream.error",
            code=error.code,
            reason=error.reason,
            grpcCode=error.grpc_code.name,
            status=status,
        )
    if error.code == InternalError.code:
        return internal_error_response()
    headers: dict[str, str] = {}
    retry_after = error.details.get(RETRY_AFTER_DETAIL, "")
    if status == 429 and retry_after.isdigit() and len(retry_after) <= 4:
        headers["Retry-After"] = retry_after
    return error_response(status, error.code, error.message, error.details, headers)


async def _on_domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return domain_error_response(exc)


async def _on_remote_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RemoteError)
    return remote_error_response(exc)


async def _on_rpc_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    return remote_error_response(from_rpc_error(exc))


async def _on_storage_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("storage.error", error=str(exc))
    return domain_error_response(
        ServiceUnavailable("File storage is unavailable. Please try again.")
    )


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "VALIDATION_ERROR", _validation_message(exc))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code)
    if code is None:
        return internal_error_response()
    if exc.status_code == 401:
        return domain_error_response(Unauthorized())
    message = _HTTP_MESSAGES.get(exc.status_code, "The request is not valid.")
    headers = exc.headers
    if exc.status_code == 405 and (allowed := _documented_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return error_response(exc.status_code, code, message, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _documented_methods(request: Request) -> str | None:
    """Every method the app serves on the request's path (RFC 9110 15.5.6), hidden
    routes (HEAD) included: Starlette's own 405 names only the first route that matched
    the path, and a path's methods are often routes of their own (GET and POST of
    /generations). Asked of the routes themselves, as routing would."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed) or None


def _validation_message(exc: RequestValidationError) -> str:
    return validation_message(exc.errors())


# A location part shown as it is: an index, or a name that could be one of our fields.
_SHOWN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """A short safe text naming the first bad input, never echoing what the client wrote:
    not its value, and not a key of its own (an unknown field's name can be 60 KB of
    anything, control characters included), only names that could be ours."""
    if not errors:
        return "The request is not valid."
    first = errors[0]
    text = str(first.get("msg", "is not valid"))
    parts = [part for part in first.get("loc", ()) if part != "body"]
    if parts[:1] == ["header"] and len(parts) == 2:
        # Only declared headers are validated: the name is ours (Idempotency-Key).
        return f"The {parts[1]} header: {text}"
    if not all(isinstance(part, int) or _SHOWN_NAME.fullmatch(str(part)) for part in parts):
        return f"A field: {text}"
    location = ".".join(str(part) for part in parts)
    return f"{location}: {text}" if location else text


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on ``app`` (unexpected errors: see the middleware)."""
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RemoteError, _on_remote_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _on_rpc_error)
    app.add_exception_handler(StorageError, _on_storage_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
