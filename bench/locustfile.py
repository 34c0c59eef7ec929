"""The load: locust users for the bench, run headless by bench/loadgen.py.

Pick a class on locust's command line: SubmitUser (POST /api/v1/generations with
a prebuilt 1 MB multipart body, a NEW user id and token per request, so the
one-in-flight rule and the monthly quota never refuse it), StatusUser (GET one
of the finished jobs named in BENCH_STATUS_TARGETS as its owner) or HealthUser
(GET /healthz: a bare JSON endpoint of the same edge behind the same Envoy).
Every request's own duration is written to BENCH_SAMPLES_OUT when the run ends.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from locust import FastHttpUser, constant, events, task

_SAMPLES: list[tuple[float, float, bool, int]] = []
_CONTENT_TYPE = os.environ.get("BENCH_CONTENT_TYPE", "")


def _read(variable: str) -> bytes:
    path = os.environ.get(variable)
    return Path(path).read_bytes() if path else b""


_BODY = _read("BENCH_BODY_FILE")
_TARGETS: list[dict[str, str]] = json.loads(_read("BENCH_STATUS_TARGETS") or b"[]")


def _token() -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    return jwt.encode(claims, os.environ["BENCH_JWT_SECRET"], algorithm="HS256")


@events.request.add_listener
def _record(
    start_time: float, response_time: float, exception: Any, response: Any, **_: Any
) -> None:
    status = getattr(response, "status_code", 0) or 0
    _SAMPLES.append((start_time, response_time, exception is None, int(status)))


@events.quitting.add_listener
def _write(**_: Any) -> None:
    out = os.environ.get("BENCH_SAMPLES_OUT")
    if out:
        Path(out).write_text(json.dumps(_SAMPLES))


class SubmitUser(FastHttpUser):
    """Submits generations back to back, each as a different user."""

    wait_time = constant(0)

    @task
    def submit(self) -> None:
        headers = {"Authorization": f"Bearer {_token()}", "Content-Type": _CONTENT_TYPE}
        with self.client.post(
            "/api/v1/generations", data=_BODY, headers=headers, catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(f"status {response.status_code}")


class StatusUser(FastHttpUser):
    """Reads finished jobs as their owners."""

    wait_time = constant(0)

    @task
    def status(self) -> None:
        target = random.choice(_TARGETS)
        headers = {"Authorization": f"Bearer {target['token']}"}
        with self.client.get(
            target["path"], headers=headers, name="status", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")


class HealthUser(FastHttpUser):
    """The bare endpoint: the same edge process, Envoy route and middleware, no work."""

    wait_time = constant(0)

    @task
    def health(self) -> None:
        self.client.get("/healthz")


class ReadyUser(FastHttpUser):
    """The floor of any call the edge forwards: /readyz asks generation and usage for
    their gRPC health (two calls at once, no database), same process and route stack."""

    wait_time = constant(0)

    @task
    def ready(self) -> None:
        self.client.get("/readyz")
