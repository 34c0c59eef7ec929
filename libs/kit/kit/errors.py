"""Domain error types and their normalized codes.

Domain code raises these; one gRPC interceptor turns them into a status (with the
reason in the status details) and the edge turns that into an HTTP status and the
JSON error body (edge_api.statuses): nothing here knows HTTP. Messages are safe
to show a user: never put provider text, prompts or internal details in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import grpc


class DomainError(Exception):
    """Base of every error a client may see."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    # What went wrong, as it crosses the wire (ErrorInfo.reason): the code, or a
    # finer reason where a client must be told apart (PAYLOAD_TOO_LARGE is a
    # VALIDATION_ERROR to the client). The edge alone turns it into an HTTP status.
    reason: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "Something went wrong. Please try again."

    def __init__(self, message: str | None = None, **details: str) -> None:
        self.message = message or self.default_message
        # Extra machine-readable facts for the client (e.g. periodEnd); safe values only.
        self.details = details
        super().__init__(self.message)


class ValidationError(DomainError):
    code = "VALIDATION_ERROR"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "VALIDATION_ERROR"
    default_message = "The request is not valid."


class PayloadTooLarge(ValidationError):
    reason = "PAYLOAD_TOO_LARGE"
    default_message = "The upload is too large."


class UnsupportedMediaType(ValidationError):
    reason = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "The file is not a supported image."


class RequestTimeout(DomainError):
    """The request body arrived too slowly (or not in time) and was cut off."""

    code = "REQUEST_TIMEOUT"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "REQUEST_TIMEOUT"
    default_message = "The upload was too slow. Please try again."


RETRY_AFTER_DETAIL = "retryAfterSeconds"


class TooManyRequests(DomainError):
    """A capacity limit was hit; the client may retry after ``retry_after_seconds``."""

    code = "TOO_MANY_REQUESTS"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_REQUESTS"
    default_message = "Too many uploads at once. Please try again shortly."

    def __init__(self, message: str | None = None, *, retry_after_seconds: int = 1) -> None:
        # Sent as the Retry-After header (whole seconds), never in the body; across a
        # gRPC hop it travels as the detail RETRY_AFTER_DETAIL, which the edge turns
        # back into the header.
        super().__init__(message, **{RETRY_AFTER_DETAIL: str(retry_after_seconds)})
        self.retry_after_seconds = retry_after_seconds


class Unauthorized(DomainError):
    code = "UNAUTHORIZED"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHORIZED"
    default_message = "Authentication required."


class NotFound(DomainError):
    code = "NOT_FOUND"
    grpc_status = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"
    default_message = "Not found."


class TooManyInflight(DomainError):
    code = "TOO_MANY_INFLIGHT"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "TOO_MANY_INFLIGHT"
    default_message = "You already have a generation in progress."


class JobNotCancellable(DomainError):
    code = "JOB_NOT_CANCELLABLE"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "JOB_NOT_CANCELLABLE"
    default_message = "This generation has already finished and cannot be canceled."


class JobNotFinished(DomainError):
    code = "JOB_NOT_FINISHED"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "JOB_NOT_FINISHED"
    default_message = "This generation is still running; cancel it first."


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    reason = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This idempotency key was already used for a different request."


class LimitExceeded(DomainError):
    code = "LIMIT_EXCEEDED"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "LIMIT_EXCEEDED"
    default_message = "You have no generations left this month."


class UpstreamError(DomainError):
    code = "UPSTREAM_ERROR"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    reason = "UPSTREAM_ERROR"
    default_message = "The image service is unavailable. Please try again."


class ServiceUnavailable(DomainError):
    """A dependency of ours (the database, another service) cannot be reached now."""

    code = "UPSTREAM_ERROR"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    reason = "SERVICE_UNAVAILABLE"
    default_message = "The service is temporarily unavailable. Please try again."


class InternalError(DomainError):
    """An unexpected failure; the message is always the generic one."""


ALL_ERRORS: tuple[type[DomainError], ...] = (
    ValidationError,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    TooManyRequests,
    Unauthorized,
    NotFound,
    TooManyInflight,
    JobNotCancellable,
    JobNotFinished,
    IdempotencyKeyReused,
    LimitExceeded,
    UpstreamError,
    ServiceUnavailable,
    InternalError,
)


# The client-facing code of each reason (several reasons share one code).
CODE_BY_REASON: Mapping[str, str] = MappingProxyType({cls.reason: cls.code for cls in ALL_ERRORS})
