"""What the adapter sends to Replicate and how it reads the answers."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from generation.domain.provider import (
    ImageProvider,
    InvalidProviderPayload,
    PredictionNotFound,
    PredictionRequest,
    ProviderRejected,
    ProviderStatus,
)
from generation.providers.replicate import ReplicateProvider, cancel_after

REQUEST = PredictionRequest(
    prompt="Style: Japandi; Room type: Dining. Keep the windows.",
    image_urls=(
        "https://s3.test/private/u/inputs/a.jpg?X-Amz-Signature=abc",
        "https://s3.test/private/u/inputs/b.png?X-Amz-Signature=def",
    ),
    webhook_url="https://hooks.test/api/v1/webhooks/replicate",
    webhook_events=("start", "output", "logs", "completed"),
    output_format="jpg",
)


async def test_create_posts_the_model_endpoint_with_the_exact_body(
    make_harness: Any, answers: Any
) -> None:
    harness = make_harness(answers.script(answers.prediction(201)))

    prediction = await harness.provider.create_prediction(REQUEST)

    [request] = harness.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.replicate.test/v1/models/google/nano-banana/predictions"
    assert request.headers["authorization"] == f"Bearer {answers.token}"
    assert request.headers["content-type"] == "application/json"
    # Connecting gets half the attempt (generation.providers.replicate.attempt_timeout).
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 5.0, "write": 5.0, "pool": 2.5}
    assert json.loads(request.content) == {
        "input": {
            "prompt": REQUEST.prompt,
            "image_input": list(REQUEST.image_urls),
            "output_format": "jpg",
        },
        "webhook": REQUEST.webhook_url,
        "webhook_events_filter": ["start", "output", "logs", "completed"],
    }
    assert prediction.id == answers.prediction_id
    assert prediction.status is ProviderStatus.STARTING
    assert prediction.created_at == datetime(2025, 8, 30, 2, 47, 41, 245000, tzinfo=UTC)


async def test_create_without_images_sends_an_empty_image_list(
    make_harness: Any, answers: Any
) -> None:
    harness = make_harness(answers.script(answers.prediction(201)))
    text_only = PredictionRequest(
        prompt="Imagine a home office",
        image_urls=(),
        webhook_url="https://hooks.test/w",
        webhook_events=("completed",),
        output_format="png",
    )

    await harness.provider.create_prediction(text_only)

    body = json.loads(harness.requests[0].content)
    assert body["input"] == {
        "prompt": "Imagine a home office",
        "image_input": [],
        "output_format": "png",
    }
    assert body["webhook_events_filter"] == ["completed"]
    assert "webhook_completed" not in body


@pytest.mark.parametrize("status_code", [200, 202])
async def test_create_accepts_other_success_codes(
    make_harness: Any, answers: Any, status_code: int
) -> None:
    harness = make_harness(answers.script(answers.prediction(status_code, status="processing")))

    prediction = await harness.provider.create_prediction(REQUEST)

    assert prediction.status is ProviderStatus.PROCESSING


async def test_get_and_cancel_use_the_prediction_paths(make_harness: Any, answers: Any) -> None:
    canceled = answers.prediction(
        200, status="canceled", completed_at="2025-08-30T02:47:50.99397566Z"
    )
    harness = make_harness(answers.script(answers.prediction(200), canceled))

    got = await harness.provider.get_prediction(answers.prediction_id)
    stopped = await harness.provider.cancel_prediction(answers.prediction_id)

    first, second = harness.requests
    assert (first.method, first.url.path) == ("GET", f"/v1/predictions/{answers.prediction_id}")
    assert (second.method, second.url.path) == (
        "POST",
        f"/v1/predictions/{answers.prediction_id}/cancel",
    )
    assert all(r.headers["authorization"] == f"Bearer {answers.token}" for r in harness.requests)
    assert got.status is ProviderStatus.STARTING
    assert stopped.status is ProviderStatus.CANCELED
    assert stopped.completed_at == datetime(2025, 8, 30, 2, 47, 50, 993975, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad_id", ["", "UPPER", "../../v1/account", "a/b", "id?x=1", "x" * 65, "ünïcode"]
)
async def test_invalid_ids_are_not_found_without_a_call(
    make_harness: Any, answers: Any, bad_id: str
) -> None:
    harness = make_harness(answers.script())

    with pytest.raises(PredictionNotFound):
        await harness.provider.get_prediction(bad_id)
    with pytest.raises(PredictionNotFound):
        await harness.provider.cancel_prediction(bad_id)
    assert harness.requests == []


async def test_404_is_prediction_not_found(make_harness: Any, answers: Any) -> None:
    harness = make_harness(answers.script(answers.problem(404, "Not found.")))

    with pytest.raises(PredictionNotFound):
        await harness.provider.get_prediction(answers.prediction_id)


async def test_rejections_keep_provider_text_out_of_the_message(
    make_harness: Any, answers: Any
) -> None:
    secret_detail = "Input validation failed: prompt 'my secret words' is invalid"
    harness = make_harness(answers.script(answers.problem(422, secret_detail)))

    with pytest.raises(ProviderRejected) as caught:
        await harness.provider.create_prediction(REQUEST)

    assert not isinstance(caught.value, PredictionNotFound)
    assert "422" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_unreadable_success_answer_is_invalid_payload(
    make_harness: Any, answers: Any
) -> None:
    harness = make_harness(answers.script(httpx.Response(201, content=b"<html>oops</html>")))

    with pytest.raises(InvalidProviderPayload):
        await harness.provider.create_prediction(REQUEST)


async def test_unexpected_redirect_is_rejected_not_followed(
    make_harness: Any, answers: Any
) -> None:
    moved = httpx.Response(302, headers={"location": "https://elsewhere.test/steal"})
    harness = make_harness(answers.script(moved))

    with pytest.raises(ProviderRejected):
        await harness.provider.get_prediction(answers.prediction_id)
    assert len(harness.requests) == 1


def test_parse_event_reads_a_webhook_body(answers: Any) -> None:
    # Annotated as the Protocol so mypy checks the adapter conforms to it.
    provider: ImageProvider = ReplicateProvider(
        answers.base_url, answers.token, "google/nano-banana", timeout_seconds=1, max_attempts=1
    )
    body = answers.prediction_json(
        status="succeeded", output="https://replicate.delivery/xezq/abc/tmp1.jpg"
    )

    prediction = provider.parse_event(json.dumps(body).encode())

    assert prediction.status is ProviderStatus.SUCCEEDED
    assert prediction.output_urls == ("https://replicate.delivery/xezq/abc/tmp1.jpg",)


@pytest.mark.parametrize(
    "model", ["nano-banana", "/x", "a/", "Google/Nano", "a/b/c", "../..", "./x", "a b/c"]
)
def test_malformed_model_names_are_refused_at_construction(model: str) -> None:
    with pytest.raises(ValueError, match="model"):
        ReplicateProvider("http://x", "t", model, timeout_seconds=1, max_attempts=1)


def test_empty_token_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="api_token"):
        ReplicateProvider("http://x", "", "a/b", timeout_seconds=1, max_attempts=1)


async def test_aclose_closes_only_an_owned_client(answers: Any) -> None:
    owned = ReplicateProvider("http://x", "t", "a/b", timeout_seconds=1, max_attempts=1)
    borrowed_client = httpx.AsyncClient()
    borrowed = ReplicateProvider(
        "http://x", "t", "a/b", timeout_seconds=1, max_attempts=1, http_client=borrowed_client
    )

    await owned.aclose()
    await borrowed.aclose()

    assert owned._client.is_closed
    assert not borrowed_client.is_closed
    await borrowed_client.aclose()


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(690, "11m30s"), (600, "10m"), (3723, "1h2m3s"), (7200, "2h"), (59, "59s"), (1, "5s")],
)
def test_cancel_after_is_written_as_replicate_reads_it(seconds: int, header: str) -> None:
    assert cancel_after(seconds) == header


async def test_a_create_with_a_deadline_sends_cancel_after(make_harness: Any, answers: Any) -> None:
    harness = make_harness(answers.script(answers.prediction(201), answers.prediction(201)))

    await harness.provider.create_prediction(dataclasses.replace(REQUEST, cancel_after_seconds=690))
    await harness.provider.create_prediction(REQUEST)

    with_deadline, without = harness.requests
    assert with_deadline.headers["cancel-after"] == "11m30s"
    assert with_deadline.headers["authorization"] == f"Bearer {answers.token}"
    assert "cancel-after" not in without.headers


def test_a_token_read_from_a_secret_file_loses_its_newline() -> None:
    """A token file usually ends in a newline: sent as is in the Authorization header,
    every call would be refused before it left the process (h11), each submission a 502,
    while the production checks, which strip it, pass."""
    from generation.settings import GenerationSettings

    base = {
        "GENERATION_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/db",
        "S3_ENDPOINT": "127.0.0.1:9",
        "S3_ACCESS_KEY": "a",
        "S3_SECRET_KEY": "b" * 16,
    }
    settings = GenerationSettings(**base, REPLICATE_API_TOKEN="r8_secret_token\n")  # type: ignore[arg-type]
    assert settings.replicate_token() == "r8_secret_token"
    with pytest.raises(ValueError, match="one token"):
        GenerationSettings(**base, REPLICATE_API_TOKEN="r8_one two")  # type: ignore[arg-type]
