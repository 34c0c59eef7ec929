"""Retry policy for provider HTTP calls: what counts as transient and how long to wait.

Transient: 429, 5xx, timeouts, connection and remote protocol errors. Everything
else (other 4xx, bad URLs, undecodable bodies) fails at once. Waits use full
jitter exponential backoff, or the server's ``Retry-After`` when it sends one,
both capped so one call never hangs for long.

Within a caller's :class:`Deadline` (the gRPC deadline of the RPC, less a margin),
no retry starts unless at least ``MIN_ATTEMPT_SECONDS`` remain after its wait, and
each attempt's timeout is clipped to what remains (:func:`attempt_seconds`).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from generation import metrics
from generation.domain.provider import Deadline, ProviderUnavailable
from kit.logging import get_logger

T = TypeVar("T")

_log = get_logger("generation.providers.retries")
_DELAY_SECONDS = re.compile(r"\d{1,10}(?:\.\d{1,6})?")
# An attempt with less time than this left cannot be expected to get an answer.
MIN_ATTEMPT_SECONDS = 1.0


class TransientStatus(Exception):
    """An HTTP answer worth retrying (429 or 5xx), with the server's advised delay."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"transient HTTP status {status}")
        self.status = status
        self.retry_after = retry_after


class EmptyBody(Exception):
    """A 200 with no bytes: no output file (a delivery host's glitch, worth a retry)."""


class NotAFile(Exception):
    """A 200 whose body says it is a page, not a file (a CDN's or proxy's error page in
    HTML or JSON): stored, it would be a succeeded (and charged) render of that page.
    A delivery host's glitch, worth a retry."""


# Failures retried as they are. Other httpx errors (unsupported scheme, local
# protocol misuse, undecodable content) would fail the same way again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientStatus,
    EmptyBody,
    NotAFile,
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    TimeoutError,
)
# What a create is retried on: a 429 or 5xx answer, or a connection that was never
# made. After a read or write failure the request may have reached Replicate and
# started a run, which a retry would start a second time (REPLICATE.md: "retry creates
# only on 429, 5xx and connection errors").
CREATE_RETRIED_ERRORS: tuple[type[BaseException], ...] = (
    TransientStatus,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# What "the provider could not be reached" means once retries are over: the
# transient failures plus any other transport or protocol error.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, httpx.HTTPError)


def is_transient_status(status: int) -> bool:
    """True for statuses a retry may fix: 429 and 5xx."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    ``None`` when absent or unreadable; a date in the past gives ``0``.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delay = (moment - (now or datetime.now(UTC))).total_seconds()
    return max(delay, 0.0)


class wait_retry_after_or_jitter(wait_base):  # noqa: N801 - tenacity's naming
    """The server's ``Retry-After`` when given, else full-jitter exponential backoff."""

    def __init__(self, base_seconds: float, max_seconds: float) -> None:
        self._max = max_seconds
        self._jitter = wait_random_exponential(multiplier=base_seconds, max=max_seconds)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, TransientStatus) and failure.retry_after is not None:
            # Longer than the cap: ``stop_when_told_to_wait_longer`` gives up instead.
            return min(failure.retry_after, self._max)
        return float(self._jitter(retry_state))


class stop_when_told_to_wait_longer(stop_base):  # noqa: N801 - tenacity's naming
    """Stop when the server's ``Retry-After`` asks for more than the longest wait: a
    retry sooner than it said would only be refused again."""

    def __init__(self, max_seconds: float) -> None:
        self._max = max_seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        return (
            isinstance(failure, TransientStatus)
            and failure.retry_after is not None
            and failure.retry_after > self._max
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one logical call."""

    max_attempts: int
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_seconds < 0 or self.backoff_max_seconds < 0:
            raise ValueError("backoff times must not be negative")


class stop_before_deadline(stop_base):  # noqa: N801 - tenacity's naming
    """Stop when the wait before the next attempt would leave it too little time."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        # tenacity computes the wait before asking whether to stop.
        left_after_wait = self._deadline.remaining() - retry_state.upcoming_sleep
        return left_after_wait < MIN_ATTEMPT_SECONDS


def attempt_seconds(
    timeout_seconds: float, deadline: Deadline | None, minimum: float = 0.0
) -> float:
    """The time one attempt may take: its timeout, clipped to the deadline's remainder.

    Raises ``TimeoutError`` (a transient failure), with nothing sent, when the deadline
    has passed or less than ``minimum`` remains (a create: one sent with too little time
    to carry its answer would start a billed run whose answer is lost).
    """
    if deadline is None:
        return timeout_seconds
    remaining = deadline.remaining()
    if remaining <= 0 or remaining < minimum:
        raise TimeoutError("too little of the caller's deadline is left for an attempt")
    return min(timeout_seconds, remaining)


def describe_failure(failure: BaseException | None) -> str:
    """A short name for a failure, free of provider text: the status or the error type."""
    if isinstance(failure, TransientStatus):
        return str(failure.status)
    return type(failure).__name__


def unavailable(
    failure: BaseException, operation: str, what: str, **fields: object
) -> ProviderUnavailable:
    """What a call still failing after its retries raises, logged (``fields`` say which
    call: never a URL, which may carry a signature) and counted."""
    reason = describe_failure(failure)
    _log.warning("provider.unavailable", operation=operation, **fields, reason=reason)
    metrics.provider_unavailable(operation)
    return ProviderUnavailable(f"{what} failed ({reason})")


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    operation: str,
    deadline: Deadline | None = None,
    retried: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> T:
    """Run ``attempt(number)`` until it succeeds, fails for good or runs out of attempts.

    Only the ``retried`` failures are tried again. With a ``deadline``, also until too
    little time is left for another attempt. Failures that outlast the attempts are
    re-raised as they are; the caller maps them to its own error.
    """

    def before_sleep(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        _log.info(
            "provider.retry",
            operation=operation,
            attempt=state.attempt_number,
            reason=describe_failure(failure),
            waitSeconds=round(state.upcoming_sleep, 3),
        )
        metrics.provider_retry(operation, describe_failure(failure))

    retrying = AsyncRetrying(
        sleep=policy.sleep,
        stop=(
            stop_after_attempt(policy.max_attempts)
            | stop_when_told_to_wait_longer(policy.backoff_max_seconds)
            | (stop_never if deadline is None else stop_before_deadline(deadline))
        ),
        wait=wait_retry_after_or_jitter(policy.backoff_base_seconds, policy.backoff_max_seconds),
        retry=retry_if_exception_type(retried),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for state in retrying:
        with state:
            return await attempt(state.retry_state.attempt_number)
    raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover
