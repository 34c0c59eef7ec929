"""The one table from an error's reason to the HTTP status the edge answers.

Internal services send only ``ErrorInfo.reason`` (kit.errors) and safe details;
which HTTP status that is belongs to the REST contract, so it is decided here
(SPEC.md's error table, plus the codes the OpenAPI documents beside it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

HTTP_STATUS_BY_REASON: Final[Mapping[str, int]] = MappingProxyType(
    {
        "VALIDATION_ERROR": 400,
        "PAYLOAD_TOO_LARGE": 413,
        "UNSUPPORTED_MEDIA_TYPE": 415,
        "REQUEST_TIMEOUT": 408,
        "TOO_MANY_REQUESTS": 429,
        "UNAUTHORIZED": 401,
        "NOT_FOUND": 404,
        "TOO_MANY_INFLIGHT": 409,
        "JOB_NOT_CANCELLABLE": 409,
        "JOB_NOT_FINISHED": 409,
        "IDEMPOTENCY_KEY_REUSED": 422,
        "LIMIT_EXCEEDED": 402,
        # The provider failed after retries (SPEC: 502) ...
        "UPSTREAM_ERROR": 502,
        # ... while our own dependency (the database, a backend service) is down:
        # retryable, so 503.
        "SERVICE_UNAVAILABLE": 503,
        "INTERNAL_ERROR": 500,
    }
)
# A reason this edge does not know (a newer service, a bug) is SPEC's "anything
# else": 500 INTERNAL_ERROR. Not 502: that promises the image provider failed.
UNKNOWN_REASON_STATUS: Final = 500


def http_status(reason: str) -> int:
    """The HTTP status for ``reason``; :data:`UNKNOWN_REASON_STATUS` for an unknown one."""
    return HTTP_STATUS_BY_REASON.get(reason, UNKNOWN_REASON_STATUS)
