"""The generation service's Prometheus metrics, recorded where the matching event is logged.

Labels take values from fixed sets (statuses, sources, operations, outcome
classes); job, owner and prediction ids never become labels. Every known label
combination is created at import so it is exported as 0 before it first moves.
"""

from __future__ import annotations

import itertools

from prometheus_client import Counter, Histogram

from generation.domain.states import JobStatus
from kit.metrics import LATENCY_BUCKETS

JOB_STATUSES = tuple(status.value for status in JobStatus)
# Where a transition came from: the submission, a provider webhook, a GET refresh,
# the sweep, a user's cancel request (and a cancel that found the job succeeded).
TRANSITION_SOURCES = ("submit", "webhook", "refresh", "sweep", "user", "cancel")
PROVIDER_OPERATIONS = ("create", "get", "cancel", "download")
# One HTTP attempt: the answer's status class, or no answer at all.
CALL_OUTCOMES = ("2xx", "3xx", "4xx", "429", "5xx", "no_response")
RETRY_REASONS = ("429", "5xx", "timeout", "network")
SWEEP_ACTIONS = ("recovered", "timed_out", "settled")
SETTLEMENT_OUTCOMES = {
    "debit": ("done", "deferred", "waived"),
    "refund": ("done", "deferred"),
}
ASSET_OUTCOMES = ("stored", "deferred", "refused")

JOB_TRANSITIONS = Counter(
    "generation_job_transitions_total",
    "Jobs that moved to a status, by the new status and what moved them.",
    ["status", "source"],
)
PROVIDER_CALLS = Counter(
    "generation_provider_calls_total",
    "HTTP attempts to the image provider (each retry counts), by operation and outcome.",
    ["operation", "outcome"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "generation_provider_call_duration_seconds",
    "Duration of one HTTP attempt to the image provider, by operation.",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)
PROVIDER_RETRIES = Counter(
    "generation_provider_retries_total",
    "Provider attempts that failed transiently and were retried, by operation and reason.",
    ["operation", "reason"],
)
PROVIDER_UNAVAILABLE = Counter(
    "generation_provider_unavailable_total",
    "Provider calls that failed for good after their retries, by operation.",
    ["operation"],
)
SWEEP_PASSES = Counter("generation_sweep_passes_total", "Sweep passes completed.")
SWEEP_FAILURES = Counter(
    "generation_sweep_failures_total",
    "Sweep passes that failed, and single jobs a pass skipped after an unexpected fault.",
)
SWEEP_JOBS = Counter(
    "generation_sweep_jobs_total",
    "Jobs the sweep acted on: recovered (lost webhook), timed_out, settled (charge/refund).",
    ["action"],
)
SETTLEMENTS = Counter(
    "generation_settlements_total",
    "Charges and refunds at the usage service: done, deferred to the sweep, or waived.",
    ["operation", "outcome"],
)
ASSETS = Counter(
    "generation_assets_total",
    "Output files: stored (downloaded and saved), deferred (failed, tried again later) or"
    " refused (not from the provider's delivery hosts: the job fails).",
    ["outcome"],
)

for _status, _source in itertools.product(JOB_STATUSES, TRANSITION_SOURCES):
    JOB_TRANSITIONS.labels(status=_status, source=_source)
for _operation in PROVIDER_OPERATIONS:
    PROVIDER_CALL_SECONDS.labels(operation=_operation)
    PROVIDER_UNAVAILABLE.labels(operation=_operation)
    for _outcome in CALL_OUTCOMES:
        PROVIDER_CALLS.labels(operation=_operation, outcome=_outcome)
    for _reason in RETRY_REASONS:
        PROVIDER_RETRIES.labels(operation=_operation, reason=_reason)
for _action in SWEEP_ACTIONS:
    SWEEP_JOBS.labels(action=_action)
for _kind, _outcomes in SETTLEMENT_OUTCOMES.items():
    for _outcome in _outcomes:
        SETTLEMENTS.labels(operation=_kind, outcome=_outcome)
for _outcome in ASSET_OUTCOMES:
    ASSETS.labels(outcome=_outcome)


def job_transition(status: str, source: str) -> None:
    """A job moved to ``status``."""
    JOB_TRANSITIONS.labels(status=status, source=source).inc()


def call_outcome(status: object) -> str:
    """The outcome class of one HTTP attempt (anything but a status code: no answer)."""
    if not isinstance(status, int):
        return "no_response"
    if status == 429:
        return "429"
    return f"{min(max(status // 100, 2), 5)}xx"


def provider_call(operation: str, status: object, seconds: float) -> None:
    """One HTTP attempt to the provider ended (with an answer, or without one)."""
    PROVIDER_CALLS.labels(operation=operation, outcome=call_outcome(status)).inc()
    PROVIDER_CALL_SECONDS.labels(operation=operation).observe(seconds)


def provider_retry(operation: str, reason: str) -> None:
    """A transient failure is retried; ``reason`` is a status code or an error type name."""
    if reason.isdigit():
        label = "429" if reason == "429" else "5xx"
    else:
        label = "timeout" if "Timeout" in reason else "network"
    PROVIDER_RETRIES.labels(operation=operation, reason=label).inc()


def provider_unavailable(operation: str) -> None:
    """A provider call failed for good once its retries were spent."""
    PROVIDER_UNAVAILABLE.labels(operation=operation).inc()


def sweep_pass() -> None:
    """One sweep pass finished (the jobs it acted on are counted as they happen)."""
    SWEEP_PASSES.inc()


def sweep_acted(action: str) -> None:
    """The sweep acted on one job: recovered (lost webhook), timed_out or settled."""
    SWEEP_JOBS.labels(action=action).inc()


def settlement(operation: str, outcome: str) -> None:
    """A debit or refund was done, deferred or waived."""
    SETTLEMENTS.labels(operation=operation, outcome=outcome).inc()


def asset(outcome: str) -> None:
    """An output file was stored, found already stored, or could not be stored yet."""
    ASSETS.labels(outcome=outcome).inc()
