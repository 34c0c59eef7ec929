"""The adapter's logs: one line per call and retry, never the token, prompt or signatures."""

from __future__ import annotations

from typing import Any

import httpx
from structlog.testing import capture_logs

from generation.domain.provider import PredictionRequest

PROMPT = "Secret prompt words: a blue velvet sofa"
SIGNED = "https://s3.test/private/u/inputs/a.jpg?X-Amz-Signature=deadbeef"


async def test_calls_and_retries_are_logged_without_secrets(
    make_harness: Any, answers: Any
) -> None:
    throttled = answers.problem(429, "Request was throttled.", **{"retry-after": "1"})
    harness = make_harness(
        answers.script(
            throttled,
            httpx.ConnectError("refused"),
            answers.prediction(201),
            httpx.Response(200, content=b"jpeg"),
        ),
        max_attempts=3,
    )
    request = PredictionRequest(
        prompt=PROMPT,
        image_urls=(SIGNED,),
        webhook_url="https://hooks.test/w",
        webhook_events=("completed",),
    )

    with capture_logs() as logs:
        await harness.provider.create_prediction(request)
        await harness.provider.download_output(
            "https://replicate.delivery/x/out.jpg?sig=1", max_bytes=10
        )

    calls = [entry for entry in logs if entry["event"] == "provider.call"]
    assert [(c["attempt"], c.get("status"), c.get("error")) for c in calls] == [
        (1, 429, None),
        (2, None, "ConnectError"),
        (3, 201, None),
    ]
    assert all(c["path"] == "/v1/models/{owner}/{name}/predictions" for c in calls)
    assert all(isinstance(c["durationMs"], int) for c in calls)
    retries = [entry for entry in logs if entry["event"] == "provider.retry"]
    assert [(r["attempt"], r["reason"]) for r in retries] == [(1, "429"), (2, "ConnectError")]
    downloads = [entry for entry in logs if entry["event"] == "provider.download"]
    assert downloads[0]["host"] == "replicate.delivery"
    everything = repr(logs)
    for secret in (answers.token, PROMPT, "X-Amz-Signature", "sig=1"):
        assert secret not in everything
