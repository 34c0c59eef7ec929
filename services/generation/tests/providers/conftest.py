"""Fixtures for the Replicate adapter tests: an adapter over httpx.MockTransport.

The mock plays Replicate's HTTP side; the adapter's sleeps are recorded instead of
waited, so retry tests run instantly and can assert the delays chosen.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from generation.providers.replicate import ReplicateProvider

TOKEN = "r8_test_token_do_not_log"
BASE_URL = "https://api.replicate.test/"
PREDICTION_ID = "ufawqhfynnddngldkgtslldrkq"

Handler = Callable[[httpx.Request], httpx.Response]


def _prediction_json(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": PREDICTION_ID,
        "model": "google/nano-banana",
        "version": "hidden",
        "input": {"prompt": "a room", "image_input": [], "output_format": "jpg"},
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": None,
        "status": "starting",
        "created_at": "2025-08-30T02:47:41.245Z",
        "urls": {
            "cancel": f"https://api.replicate.com/v1/predictions/{PREDICTION_ID}/cancel",
            "get": f"https://api.replicate.com/v1/predictions/{PREDICTION_ID}",
            "web": f"https://replicate.com/p/{PREDICTION_ID}",
        },
    }
    document.update(overrides)
    return document


def _prediction_response(status_code: int = 201, **overrides: Any) -> httpx.Response:
    return httpx.Response(status_code, json=_prediction_json(**overrides))


def _problem(status_code: int, detail: str, **headers: str) -> httpx.Response:
    body = json.dumps({"title": "Problem", "detail": detail, "status": status_code})
    return httpx.Response(
        status_code,
        content=body.encode(),
        headers={"content-type": "application/problem+json", **headers},
    )


class Script:
    """Answers requests in order from a list of responses or exceptions."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self._steps = list(steps)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self._steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class Answers:
    """Builders of Replicate-shaped answers, handed to tests as the ``answers`` fixture."""

    token = TOKEN
    base_url = BASE_URL
    prediction_id = PREDICTION_ID
    # A prediction object shaped like Replicate's real answers, with overrides.
    prediction_json = staticmethod(_prediction_json)
    # An HTTP answer carrying a prediction.
    prediction = staticmethod(_prediction_response)
    # A problem+json error answer like Replicate's.
    problem = staticmethod(_problem)
    script = Script


@dataclass
class Harness:
    """One adapter wired to a scripted transport, and what it did."""

    provider: ReplicateProvider
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)


@pytest.fixture
def answers() -> type[Answers]:
    """Constants and answer builders for scripted transports."""
    return Answers


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Harness]]:
    """Builds adapters over a MockTransport; closes their clients afterwards."""
    clients: list[httpx.AsyncClient] = []

    def build(handler: Handler, **options: Any) -> Harness:
        harness_requests: list[httpx.Request] = []
        sleeps: list[float] = []

        def record(request: httpx.Request) -> httpx.Response:
            harness_requests.append(request)
            return handler(request)

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client = httpx.AsyncClient(transport=httpx.MockTransport(record))
        clients.append(client)
        settings: dict[str, Any] = {
            "timeout_seconds": 5.0,
            "max_attempts": 3,
            "http_client": client,
            "download_client": client,
            "sleep": fake_sleep,
        }
        settings.update(options)
        provider = ReplicateProvider(BASE_URL, TOKEN, "google/nano-banana", **settings)
        return Harness(provider, harness_requests, sleeps)

    yield build
    for client in clients:
        await client.aclose()
