"""Provider calls and output downloads end within the caller's deadline, retries
included (on a fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from generation.domain.provider import (
    Deadline,
    PredictionRequest,
    ProviderUnavailable,
    provider_deadline,
)
from generation.providers.retries import MIN_ATTEMPT_SECONDS

OUTPUT_URL = "https://replicate.delivery/xezq/abc123/tmpq1w2e3r4.jpg"
REQUEST = PredictionRequest("a calm room", (), "https://hooks.test/replicate", ("completed",))


class FakeClock:
    """Time that moves only when the test's transport or sleeps say so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hanging_until_timeout(clock: FakeClock, attempts: list[float]) -> Any:
    """A provider that keeps each attempt waiting for all of its time, then answers 503
    (a failure after which creates are retried too)."""

    def handle(request: httpx.Request) -> httpx.Response:
        timeout = request.extensions["timeout"]["read"]
        attempts.append(timeout)
        clock.now += timeout
        return httpx.Response(503, json={"detail": "busy", "status": 503})

    return handle


def _harness(make_harness: Any, clock: FakeClock, handler: Any, **options: Any) -> Any:
    """The adapter over ``handler``, whose retry waits move ``clock`` (and are recorded)."""
    sleeps: list[float] = []

    async def sleep_on_clock(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    harness = make_harness(handler, sleep=sleep_on_clock, **options)
    harness.sleeps = sleeps
    return harness


async def test_create_retries_stop_within_the_deadline(make_harness: Any) -> None:
    clock, attempts = FakeClock(), list[float]()
    harness = _harness(
        make_harness,
        clock,
        hanging_until_timeout(clock, attempts),
        timeout_seconds=10.0,
        max_attempts=4,
        backoff_base_seconds=0.5,
        backoff_max_seconds=8.0,
    )

    with pytest.raises(ProviderUnavailable), provider_deadline(Deadline.after(27.0, clock)):
        await harness.provider.create_prediction(REQUEST)

    # Unbounded, four 10 s attempts and their waits would take over 40 s.
    assert clock.now <= 27.0
    assert 2 <= len(attempts) < 4
    assert attempts[-1] < 10.0  # the last attempt was clipped to what remained


async def test_no_retry_starts_when_its_wait_would_leave_too_little(
    make_harness: Any, answers: Any
) -> None:
    clock = FakeClock()
    busy = answers.problem(503, "busy", **{"retry-after": "4.5"})
    harness = _harness(make_harness, clock, answers.script(busy, answers.prediction()))

    with pytest.raises(ProviderUnavailable), provider_deadline(Deadline.after(5.0, clock)):
        await harness.provider.create_prediction(REQUEST)

    assert MIN_ATTEMPT_SECONDS > 5.0 - 4.5  # the premise of this test
    assert len(harness.requests) == 1
    assert harness.sleeps == []


async def test_a_passed_deadline_sends_nothing(make_harness: Any, answers: Any) -> None:
    clock = FakeClock()
    harness = _harness(make_harness, clock, answers.script(answers.prediction()))

    with pytest.raises(ProviderUnavailable), provider_deadline(Deadline.after(-1.0, clock)):
        await harness.provider.get_prediction(answers.prediction_id)

    assert harness.requests == []


async def test_a_create_is_not_sent_without_time_for_its_answer(
    make_harness: Any, answers: Any
) -> None:
    """A create is not idempotent: one sent with 0.3 s left would start a billed run
    whose answer is then lost. It is not sent with under MIN_ATTEMPT_SECONDS left, its
    first attempt included; a get (idempotent) still tries."""
    clock = FakeClock()
    harness = _harness(make_harness, clock, answers.script(answers.prediction(200)))

    with pytest.raises(ProviderUnavailable), provider_deadline(Deadline.after(0.3, clock)):
        await harness.provider.create_prediction(REQUEST)
    assert harness.requests == []
    with provider_deadline(Deadline.after(0.3, clock)):
        await harness.provider.get_prediction(answers.prediction_id)

    assert MIN_ATTEMPT_SECONDS > 0.3  # the premise of this test
    assert [request.method for request in harness.requests] == ["GET"]


async def test_each_attempt_timeout_is_clipped_to_what_remains(
    make_harness: Any, answers: Any
) -> None:
    clock = FakeClock()
    harness = _harness(make_harness, clock, answers.script(answers.prediction(200)))

    with provider_deadline(Deadline.after(4.0, clock)):
        await harness.provider.cancel_prediction(answers.prediction_id)

    [request] = harness.requests
    assert request.extensions["timeout"]["read"] == pytest.approx(4.0)


async def test_without_a_deadline_the_retry_policy_alone_applies(
    make_harness: Any, answers: Any
) -> None:
    clock, attempts = FakeClock(), list[float]()
    harness = _harness(make_harness, clock, hanging_until_timeout(clock, attempts), max_attempts=3)

    with pytest.raises(ProviderUnavailable):
        await harness.provider.create_prediction(REQUEST)

    assert attempts == [5.0, 5.0, 5.0]


async def test_the_deadline_does_not_outlive_its_block(make_harness: Any, answers: Any) -> None:
    clock = FakeClock()
    harness = _harness(make_harness, clock, answers.script(answers.prediction(200)))

    with provider_deadline(Deadline.after(-1.0, clock)):
        pass
    await harness.provider.get_prediction(answers.prediction_id)

    assert len(harness.requests) == 1


class Drip(httpx.AsyncByteStream):
    """An output host that sends a byte now and then, for ever."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.01)
            yield b"x"


async def test_an_output_download_ends_within_the_callers_deadline(
    make_harness: Any, answers: Any
) -> None:
    """A webhook's or a GET's copy of a slow output gives up in the caller's time (the
    copy is deferred to the next applier), not after its own 120 s per attempt and
    retries: the RPC would be cancelled first, a GET then answered 503."""
    clock = FakeClock()
    harness = make_harness(
        answers.script(*[httpx.Response(200, stream=Drip()) for _ in range(3)]),
        max_attempts=3,
        download_deadline_seconds=120.0,
    )

    # 0.2 s left on a clock that stands still: one clipped attempt, then no time for
    # another (MIN_ATTEMPT_SECONDS), whatever the retry policy allows.
    with pytest.raises(ProviderUnavailable), provider_deadline(Deadline.after(0.2, clock)):
        async with asyncio.timeout(30):
            await harness.provider.download_output(OUTPUT_URL, max_bytes=10_000)

    assert len(harness.requests) == 1
