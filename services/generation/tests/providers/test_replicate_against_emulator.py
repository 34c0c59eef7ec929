"""The adapter against the Replicate emulator: real HTTP, real JSON, real webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from generation.domain.provider import (
    Prediction,
    PredictionNotFound,
    PredictionRequest,
    ProviderRejected,
    ProviderStatus,
    ProviderUnavailable,
)
from generation.providers.replicate import ReplicateProvider
from replicate_emulator import EmulatorConfig
from testkit.emulator import EmulatorServer
from testkit.recorder import RecordingServer

pytestmark = pytest.mark.integration

EVENTS = ("start", "output", "logs", "completed")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(port=0, start_delay_seconds=0.01, run_delay_seconds=0.05)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[RecordingServer]:
    with RecordingServer("webhook-receiver", path="/hooks/replicate") as webhook_receiver:
        yield webhook_receiver


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def provider(
    emulator: EmulatorServer, sleeps: list[float]
) -> AsyncIterator[ReplicateProvider]:
    emulator.control.reset()

    async def recorded_sleep(seconds: float) -> None:
        # Record the chosen delay; the emulator needs no real pause between attempts.
        sleeps.append(seconds)
        await asyncio.sleep(0)

    adapter = ReplicateProvider(
        emulator.base_url + "/",
        emulator.token,
        "google/nano-banana",
        timeout_seconds=5.0,
        max_attempts=3,
        backoff_base_seconds=0.01,
        backoff_max_seconds=2.0,
        sleep=recorded_sleep,
    )
    yield adapter
    await adapter.aclose()


def request_for(receiver: RecordingServer, **changes: object) -> PredictionRequest:
    fields: dict[str, object] = {
        "prompt": "Generate a photoreal interior concept for a Home Office in Minimal AU",
        "image_urls": (),
        "webhook_url": receiver.url,
        "webhook_events": EVENTS,
        "output_format": "jpg",
    }
    fields.update(changes)
    return PredictionRequest(**fields)  # type: ignore[arg-type]


async def settle(provider: ReplicateProvider, prediction_id: str) -> Prediction:
    for _ in range(250):
        prediction = await provider.get_prediction(prediction_id)
        if prediction.status.is_terminal:
            return prediction
        await asyncio.sleep(0.02)
    raise AssertionError(f"{prediction_id} did not finish")


async def test_create_get_succeed_and_download(
    provider: ReplicateProvider, receiver: RecordingServer
) -> None:
    created = await provider.create_prediction(request_for(receiver))
    assert created.status is ProviderStatus.STARTING
    assert created.created_at is not None

    done = await settle(provider, created.id)

    assert done.status is ProviderStatus.SUCCEEDED
    assert done.has_error is False
    assert done.created_at == created.created_at
    assert done.started_at is not None
    assert done.completed_at is not None
    assert done.created_at <= done.started_at <= done.completed_at
    [url] = done.output_urls
    image = await provider.download_output(url, max_bytes=10 * 1024 * 1024)
    assert image.startswith(b"\xff\xd8")
    with pytest.raises(ProviderRejected):
        await provider.download_output(url, max_bytes=10)


async def test_webhook_bodies_parse(provider: ReplicateProvider, receiver: RecordingServer) -> None:
    created = await provider.create_prediction(request_for(receiver))
    await settle(provider, created.id)

    def ours() -> list[Prediction]:
        # The receiver is shared by the module: other tests' deliveries (late retries,
        # empty or redirected ones) are not parsed, only those naming this prediction.
        bodies = [d.body for d in receiver.snapshot() if created.id.encode() in d.body]
        events = [provider.parse_event(body) for body in bodies]
        return [event for event in events if event.id == created.id]

    for _ in range(250):
        if any(event.status is ProviderStatus.SUCCEEDED for event in ours()):
            break
        await asyncio.sleep(0.02)
    statuses = {event.status for event in ours()}
    assert {ProviderStatus.PROCESSING, ProviderStatus.SUCCEEDED} <= statuses
    final = next(event for event in ours() if event.status is ProviderStatus.SUCCEEDED)
    assert len(final.output_urls) == 1
    assert final.completed_at is not None


async def test_cancel_a_running_prediction(
    provider: ReplicateProvider, emulator: EmulatorServer, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(hold=True)
    created = await provider.create_prediction(request_for(receiver))

    canceled = await provider.cancel_prediction(created.id)

    assert canceled.status is ProviderStatus.CANCELED
    assert canceled.completed_at is not None
    assert canceled.output_urls == ()
    assert (await provider.get_prediction(created.id)).status is ProviderStatus.CANCELED


async def test_list_and_null_outputs_are_normalized(
    provider: ReplicateProvider, emulator: EmulatorServer, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(output_shape="list")
    as_list = await settle(provider, (await provider.create_prediction(request_for(receiver))).id)
    emulator.control.set_faults(output_shape="null")
    as_null = await settle(provider, (await provider.create_prediction(request_for(receiver))).id)

    assert len(as_list.output_urls) == 1
    assert as_null.status is ProviderStatus.SUCCEEDED
    assert as_null.output_urls == ()


async def test_bad_input_is_rejected_with_422(
    provider: ReplicateProvider, emulator: EmulatorServer, receiver: RecordingServer
) -> None:
    with pytest.raises(ProviderRejected, match="422"):
        await provider.create_prediction(request_for(receiver, output_format="webp"))
    with pytest.raises(ProviderRejected, match="422"):
        await provider.create_prediction(request_for(receiver, image_urls=("not-a-url",)))
    assert emulator.control.predictions() == []


async def test_transient_errors_are_retried_with_retry_after(
    provider: ReplicateProvider,
    emulator: EmulatorServer,
    receiver: RecordingServer,
    sleeps: list[float],
) -> None:
    # The emulator sends Retry-After (whole seconds) on 429 only.
    emulator.control.set_faults(create_errors=[429, 503], retry_after_seconds=1)

    created = await provider.create_prediction(request_for(receiver))

    assert created.status is ProviderStatus.STARTING
    honoured, jittered = sleeps
    assert honoured == 1.0
    assert 0 <= jittered <= 0.02
    assert [p["id"] for p in emulator.control.predictions()] == [created.id]


async def test_persistent_errors_become_unavailable(
    provider: ReplicateProvider, emulator: EmulatorServer
) -> None:
    emulator.control.set_faults(get_errors=[500, 502, 503])

    with pytest.raises(ProviderUnavailable):
        await provider.get_prediction("abcdefghijklmnopqrstuvwxyz")


async def test_unknown_prediction_is_not_found(provider: ReplicateProvider) -> None:
    with pytest.raises(PredictionNotFound):
        await provider.get_prediction("zzzzzzzzzzzzzzzzzzzzzzzzzz")


async def test_wrong_token_is_rejected(emulator: EmulatorServer) -> None:
    adapter = ReplicateProvider(
        emulator.base_url, "r8_wrong", "google/nano-banana", timeout_seconds=5, max_attempts=3
    )
    try:
        with pytest.raises(ProviderRejected, match="401"):
            await adapter.get_prediction("zzzzzzzzzzzzzzzzzzzzzzzzzz")
    finally:
        await adapter.aclose()


async def test_a_run_past_its_deadline_is_stopped_by_the_provider(
    provider: ReplicateProvider, emulator: EmulatorServer, receiver: RecordingServer
) -> None:
    """The emulator reads Cancel-After as Replicate does: a run not started by its
    deadline (5 s, the least allowed) ends ``aborted``, unbilled, with nobody asking."""
    emulator.control.set_faults(start_delay_ms=60_000)
    created = await provider.create_prediction(request_for(receiver, cancel_after_seconds=5))
    assert emulator.control.prediction(created.id)["deadline"] is not None

    for _ in range(200):
        prediction = await provider.get_prediction(created.id)
        if prediction.status.is_terminal:
            break
        await asyncio.sleep(0.05)
    assert prediction.status is ProviderStatus.ABORTED
