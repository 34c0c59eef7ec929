"""Which failures the adapter retries, how long it waits, and when it gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from generation.domain.provider import (
    PredictionRequest,
    ProviderRejected,
    ProviderStatus,
    ProviderUnavailable,
)
from generation.providers.retries import RetryPolicy, parse_retry_after

REQUEST = PredictionRequest(
    prompt="Add tasteful furniture",
    image_urls=("https://s3.test/in.jpg",),
    webhook_url="https://hooks.test/w",
    webhook_events=("completed",),
)


async def test_503_twice_then_201_succeeds_on_the_third_attempt(
    make_harness: Any, answers: Any
) -> None:
    script = answers.script(
        answers.problem(503, "busy"), answers.problem(503, "busy"), answers.prediction(201)
    )
    harness = make_harness(script, max_attempts=3)

    prediction = await harness.provider.create_prediction(REQUEST)

    assert prediction.status is ProviderStatus.STARTING
    assert len(harness.requests) == 3
    assert len(harness.sleeps) == 2


async def test_persistent_503_gives_up_after_max_attempts(make_harness: Any, answers: Any) -> None:
    harness = make_harness(
        answers.script(*[answers.problem(503, "busy") for _ in range(4)]), max_attempts=4
    )

    with pytest.raises(ProviderUnavailable, match="503"):
        await harness.provider.get_prediction(answers.prediction_id)
    assert len(harness.requests) == 4
    assert len(harness.sleeps) == 3


async def test_backoff_is_full_jitter_within_the_exponential_window(
    make_harness: Any, answers: Any
) -> None:
    harness = make_harness(
        answers.script(*[answers.problem(500, "boom") for _ in range(6)]),
        max_attempts=6,
        backoff_base_seconds=0.5,
        backoff_max_seconds=2.0,
    )

    with pytest.raises(ProviderUnavailable):
        await harness.provider.get_prediction(answers.prediction_id)

    windows = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(harness.sleeps) == len(windows)
    assert all(0 <= slept <= window for slept, window in zip(harness.sleeps, windows, strict=True))


async def test_429_retry_after_seconds_is_honoured(make_harness: Any, answers: Any) -> None:
    throttled = answers.problem(429, "Request was throttled.", **{"retry-after": "3"})
    harness = make_harness(answers.script(throttled, answers.prediction(201)))

    await harness.provider.create_prediction(REQUEST)

    assert harness.sleeps == [3.0]
    assert len(harness.requests) == 2


async def test_429_retry_after_http_date_is_honoured(make_harness: Any, answers: Any) -> None:
    moment = datetime.now(UTC) + timedelta(seconds=4)
    throttled = answers.problem(429, "slow down", **{"retry-after": format_datetime(moment, True)})
    harness = make_harness(answers.script(throttled, answers.prediction(201)))

    await harness.provider.create_prediction(REQUEST)

    [slept] = harness.sleeps
    assert 2.0 <= slept <= 4.0


async def test_a_retry_after_longer_than_the_longest_wait_ends_the_retries(
    make_harness: Any, answers: Any
) -> None:
    """Retrying sooner than the server said would only be refused again."""
    throttled = answers.problem(429, "slow down", **{"retry-after": "3600"})
    harness = make_harness(
        answers.script(throttled, answers.prediction(201)), backoff_max_seconds=8
    )

    with pytest.raises(ProviderUnavailable, match="429"):
        await harness.provider.create_prediction(REQUEST)

    assert harness.sleeps == []
    assert len(harness.requests) == 1


async def test_a_retry_after_within_the_longest_wait_is_waited_in_full(
    make_harness: Any, answers: Any
) -> None:
    throttled = answers.problem(429, "slow down", **{"retry-after": "8"})
    harness = make_harness(
        answers.script(throttled, answers.prediction(201)), backoff_max_seconds=8
    )

    await harness.provider.create_prediction(REQUEST)

    assert harness.sleeps == [8.0]


@pytest.mark.parametrize("status_code", [400, 401, 403, 409, 422])
async def test_other_4xx_are_rejected_without_retry(
    make_harness: Any, answers: Any, status_code: int
) -> None:
    harness = make_harness(answers.script(answers.problem(status_code, "no")))

    with pytest.raises(ProviderRejected, match=str(status_code)):
        await harness.provider.create_prediction(REQUEST)
    assert len(harness.requests) == 1
    assert harness.sleeps == []


# Failures after which the request was never sent: retried for every call.
UNSENT = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")]
# Failures after which the request may have reached Replicate.
MAYBE_RECEIVED = [
    httpx.ReadTimeout("slow"),
    httpx.WriteTimeout("slow"),
    httpx.RemoteProtocolError("peer closed"),
    httpx.ReadError("reset"),
    httpx.WriteError("broken pipe"),
]


@pytest.mark.parametrize("failure", UNSENT)
async def test_connections_never_made_are_retried_for_creates(
    make_harness: Any, answers: Any, failure: Exception
) -> None:
    harness = make_harness(answers.script(failure, answers.prediction(201)))

    prediction = await harness.provider.create_prediction(REQUEST)

    assert prediction.id == answers.prediction_id
    assert len(harness.requests) == 2


@pytest.mark.parametrize("failure", MAYBE_RECEIVED)
async def test_a_create_that_may_have_reached_replicate_is_not_retried(
    make_harness: Any, answers: Any, failure: Exception
) -> None:
    # A retry could start a second, paid run that no job would ever claim.
    harness = make_harness(answers.script(failure, answers.prediction(201)))

    with pytest.raises(ProviderUnavailable, match=type(failure).__name__):
        await harness.provider.create_prediction(REQUEST)
    assert len(harness.requests) == 1
    assert harness.sleeps == []


@pytest.mark.parametrize("failure", UNSENT + MAYBE_RECEIVED)
async def test_reads_and_cancels_are_retried_after_any_transport_failure(
    make_harness: Any, answers: Any, failure: Exception
) -> None:
    # Asking again changes nothing at Replicate: a get reads, a cancel of a
    # canceled prediction answers it as it is.
    harness = make_harness(
        answers.script(failure, answers.prediction(200), failure, answers.prediction(200))
    )

    await harness.provider.get_prediction(answers.prediction_id)
    await harness.provider.cancel_prediction(answers.prediction_id)

    assert len(harness.requests) == 4


async def test_connection_errors_that_persist_become_unavailable(
    make_harness: Any, answers: Any
) -> None:
    harness = make_harness(answers.script(*[httpx.ConnectError("refused") for _ in range(3)]))

    with pytest.raises(ProviderUnavailable, match="ConnectError") as caught:
        await harness.provider.cancel_prediction(answers.prediction_id)
    assert len(harness.requests) == 3
    assert caught.value.__cause__ is None


async def test_single_attempt_policy_never_sleeps(make_harness: Any, answers: Any) -> None:
    harness = make_harness(answers.script(answers.problem(502, "bad gateway")), max_attempts=1)

    with pytest.raises(ProviderUnavailable):
        await harness.provider.get_prediction(answers.prediction_id)
    assert harness.sleeps == []


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:10 GMT", now) == 10.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_attempts=1, backoff_base_seconds=-1)
