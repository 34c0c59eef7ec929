"""Domain errors across the gRPC boundary, both directions.

The server side packs a :class:`~kit.errors.DomainError` into a
``google.rpc.Status`` whose ``ErrorInfo`` carries the error's ``reason`` and any
safe details, nothing else: which HTTP status that is, is the edge's business. The client side
turns a failed call back into a :class:`RemoteError` without ever exposing the
remote's internal text for unexpected failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from kit.errors import CODE_BY_REASON, DomainError, InternalError, ServiceUnavailable

ERROR_DOMAIN = "interior"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def to_grpc_status(error: DomainError) -> grpc.Status:
    """A rich gRPC status for a domain error."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=ERROR_DOMAIN,
        metadata=error.details,
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=error.grpc_status.value[0], message=error.message, details=[detail]
    )
    grpc_status: grpc.Status = rpc_status.to_status(status)
    return grpc_status


@dataclass(frozen=True)
class RemoteError(Exception):
    """A failed gRPC call, normalized for the caller.

    ``reason`` is the remote's ErrorInfo.reason (a reason this version does not
    know is kept as sent); ``code`` is the client-facing code of a known reason,
    ``INTERNAL_ERROR`` for any other.
    """

    reason: str
    code: str
    message: str
    grpc_code: grpc.StatusCode
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Transport failures mean the other service could not be reached or answered in time.
_TRANSPORT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> RemoteError:
    """Decode a failed call; anything without our ErrorInfo becomes generic."""
    info = _error_info(error)
    if info is not None:
        return RemoteError(
            reason=info.reason,
            code=CODE_BY_REASON.get(info.reason, InternalError.code),
            message=error.details() or "",
            grpc_code=error.code(),
            details=dict(info.metadata),
        )
    fallback: DomainError = (
        ServiceUnavailable("A backend service is unavailable. Please try again.")
        if error.code() in _TRANSPORT_CODES
        else InternalError()
    )
    return RemoteError(
        reason=fallback.reason,
        code=fallback.code,
        message=fallback.message,
        grpc_code=error.code(),
    )


def answered_by_a_service(error: grpc.aio.AioRpcError) -> bool:
    """True when the failure is one of our services' own answers (it carries our
    ErrorInfo), not a transport failure before any service answered."""
    return _error_info(error) is not None


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    metadata = error.trailing_metadata() or ()
    for key, value in metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return info
    return None
