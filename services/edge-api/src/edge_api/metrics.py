"""The edge's own Prometheus metrics (per-route counts and latency come from kit.metrics).

Uploads refused as too large (413) or not a supported image (415) are counted
by reason, whichever layer refused them: the body cap, the multipart parser,
the content-type check, or the generation service's image inspection.
"""

from __future__ import annotations

from prometheus_client import Counter

from edge_api.routes import API_PREFIX

UPLOAD_ROUTE = f"{API_PREFIX}/generations"
UPLOAD_REJECTION_REASONS = {413: "too_large", 415: "unsupported_media_type"}

UPLOADS_REJECTED = Counter(
    "edge_uploads_rejected_total",
    "Generation submissions refused: too_large (413) or unsupported_media_type (415).",
    ["reason"],
)

for _reason in UPLOAD_REJECTION_REASONS.values():
    UPLOADS_REJECTED.labels(reason=_reason)


def record_answer(method: object, route: str, status: int) -> None:
    """Count the answer when it refused an upload (the access log calls this for every one)."""
    reason = UPLOAD_REJECTION_REASONS.get(status)
    if reason is not None and method == "POST" and route == UPLOAD_ROUTE:
        UPLOADS_REJECTED.labels(reason=reason).inc()
