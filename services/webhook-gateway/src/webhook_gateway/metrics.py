"""The gateway's own Prometheus metrics (per-route counts and latency come from kit.metrics).

Labels take values from fixed sets; delivery, job and prediction ids never
become labels. Known children are created at import so they export as 0.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter

REJECT_REASONS = (
    "too_large",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "not_json",
    "incomplete",
)
FORWARD_OUTCOMES = ("applied", "unknown_prediction", "stale")
# Failure codes the forwarder reports besides gRPC status names; anything else is OTHER.
_EXTRA_FAILURE_CODES = frozenset({"NOT_CONNECTED", "OK_WITHOUT_OUTCOME"})
_FAILURE_CODES = frozenset(code.name for code in grpc.StatusCode) | _EXTRA_FAILURE_CODES

RECEIVED = Counter(
    "webhook_gateway_webhooks_received_total", "Webhook deliveries that reached the endpoint."
)
REJECTED = Counter(
    "webhook_gateway_webhooks_rejected_total",
    "Webhook deliveries refused before forwarding, by reason (signature failures included).",
    ["reason"],
)
FORWARDED = Counter(
    "webhook_gateway_webhooks_forwarded_total",
    "Webhook events generation accepted, by what it did with them.",
    ["outcome"],
)
FORWARD_FAILURES = Counter(
    "webhook_gateway_forward_failures_total",
    "Webhook events generation did not accept (the provider retries), by gRPC code.",
    ["grpc_code"],
)

for _reason in REJECT_REASONS:
    REJECTED.labels(reason=_reason)
for _outcome in FORWARD_OUTCOMES:
    FORWARDED.labels(outcome=_outcome)
for _code in ("INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN"):
    FORWARD_FAILURES.labels(grpc_code=_code)


def rejected(reason: str) -> None:
    """A delivery was refused (``reason`` from :data:`REJECT_REASONS`)."""
    REJECTED.labels(reason=reason).inc()


def forwarded(outcome: str) -> None:
    """Generation accepted the event; ``outcome`` is applied/unknown_prediction/stale."""
    FORWARDED.labels(outcome=outcome if outcome in FORWARD_OUTCOMES else "other").inc()


def forward_failed(grpc_code: str) -> None:
    """Generation did not accept the event (a gRPC code name or the forwarder's own code)."""
    FORWARD_FAILURES.labels(grpc_code=grpc_code if grpc_code in _FAILURE_CODES else "OTHER").inc()
