"""Webhook deliveries outside the timestamp tolerance (5 min) are refused, replays too.

Deliveries are signed with the emulator's real secret, so only the timestamp (or
a changed body) makes them fail; they go to the gateway directly and through Envoy.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from testkit.envoy import Envoy
from testkit.stack import Stack
from tests.badinput.checks import assert_error
from tests.e2e.harness import User

WEBHOOK_PATH = "/api/v1/webhooks/replicate"


def signed_at(
    secret: str, body: bytes, at: datetime, message_id: str | None = None
) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body.decode()),
        "content-type": "application/json",
    }


@pytest.fixture
async def finished_job(stack: Stack, user: User) -> dict[str, Any]:
    response = await user.submit("imagine", prompt="A sunny living room with oak floors")
    assert response.status_code == 202, response.text
    return await user.wait_for(response.json()["id"], {"succeeded"})


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=-1)])
@pytest.mark.parametrize("route", ["gateway", "envoy"])
async def test_deliveries_outside_the_tolerance_are_401(
    stack: Stack,
    envoy: Envoy,
    user: User,
    http: httpx.AsyncClient,
    finished_job: dict[str, Any],
    skew: timedelta,
    route: str,
) -> None:
    body = json.dumps(
        {"id": finished_job["predictionId"], "status": "failed", "error": "replayed"}
    ).encode()
    headers = signed_at(stack.emulator.webhook_secret, body, datetime.now(UTC) + skew)
    base = stack.gateway.base_url if route == "gateway" else envoy.url
    response = await http.post(f"{base}{WEBHOOK_PATH}", content=body, headers=headers)
    assert_error(response, 401, "UNAUTHORIZED")
    assert (await user.get(finished_job["id"])).json() == finished_job


async def test_a_real_delivery_replayed_later_is_refused(
    stack: Stack, user: User, http: httpx.AsyncClient, finished_job: dict[str, Any]
) -> None:
    """The provider's own prediction (the webhook's body), re-sent 6 minutes later."""
    body = json.dumps(await stack.control("prediction", finished_job["predictionId"])).encode()
    stale = datetime.now(UTC) - timedelta(minutes=6)
    headers = signed_at(stack.emulator.webhook_secret, body, stale, message_id="msg_replayed")
    response = await http.post(
        f"{stack.gateway.base_url}{WEBHOOK_PATH}", content=body, headers=headers
    )
    assert_error(response, 401, "UNAUTHORIZED")
    # The same delivery signed now is authentic, and being a repeat it changes nothing.
    headers = signed_at(stack.emulator.webhook_secret, body, datetime.now(UTC))
    response = await http.post(
        f"{stack.gateway.base_url}{WEBHOOK_PATH}", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    assert (await user.get(finished_job["id"])).json() == finished_job


async def test_a_signature_for_another_body_is_refused(
    stack: Stack, user: User, http: httpx.AsyncClient, finished_job: dict[str, Any]
) -> None:
    original = json.dumps({"id": finished_job["predictionId"], "status": "succeeded"}).encode()
    headers = signed_at(stack.emulator.webhook_secret, original, datetime.now(UTC))
    forged = json.dumps({"id": finished_job["predictionId"], "status": "failed"}).encode()
    response = await http.post(
        f"{stack.gateway.base_url}{WEBHOOK_PATH}", content=forged, headers=headers
    )
    assert_error(response, 401, "UNAUTHORIZED")
    assert (await user.get(finished_job["id"])).json() == finished_job
