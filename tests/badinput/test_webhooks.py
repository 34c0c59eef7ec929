"""Webhook bodies that are correctly signed but wrong in themselves.

Each delivery is signed with the emulator's real secret (standardwebhooks), so the
gateway's signature check passes and the body is what is tested. The job the
events name stays exactly as it was: status, timestamps and the charge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.badinput.checks import assert_error
from tests.e2e.harness import Stack, User

WEBHOOK_PATH = "/api/v1/webhooks/replicate"


def signed(secret: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, signed now."""
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, now, body.decode("utf-8", "surrogateescape"))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@pytest.fixture
async def held_job(stack: Stack, user: User) -> AsyncIterator[dict[str, Any]]:
    """A job the emulator keeps in flight while the bad events arrive."""
    await stack.control("set_faults", hold=True)
    response = await user.submit("imagine", prompt="A sunny living room with oak floors")
    assert response.status_code == 202, response.text
    # The emulator holds a prediction once it is processing.
    yield await user.wait_for(response.json()["id"], {"processing"})
    await stack.control("set_faults", hold=False)


def _bodies(prediction_id: str) -> dict[str, bytes]:
    def event(**fields: Any) -> bytes:
        return json.dumps(fields).encode()

    return {
        "not_json": b"status=succeeded",
        "truncated_json": b'{"id": "' + prediction_id.encode() + b'", "status": "succ',
        "json_array": event_list(prediction_id),
        "json_string": b'"succeeded"',
        "json_null": b"null",
        "empty": b"",
        "empty_object": b"{}",
        "missing_status": event(id=prediction_id),
        "missing_id": event(status="succeeded", output=["https://example.com/x.jpg"]),
        "unknown_status": event(id=prediction_id, status="exploded"),
        "status_upper_case": event(id=prediction_id, status="SUCCEEDED"),
        "status_number": event(id=prediction_id, status=3),
        "status_null": event(id=prediction_id, status=None),
        "id_number": event(id=12345, status="failed"),
        "id_object": event(id={"$ne": None}, status="failed"),
        "deeply_nested": b'{"id": "'
        + prediction_id.encode()
        + b'", "x": '
        + b"[" * 50000
        + b"]" * 50000
        + b"}",
    }


def event_list(prediction_id: str) -> bytes:
    return json.dumps([{"id": prediction_id, "status": "failed"}]).encode()


def sign_bytes(secret: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers computed over raw bytes (the library only signs text)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


async def _post(stack: Stack, http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(
        f"{stack.gateway.base_url}{WEBHOOK_PATH}",
        content=body,
        headers=signed(stack.emulator.webhook_secret, body),
    )


@pytest.mark.parametrize(
    "case",
    [
        "not_json",
        "truncated_json",
        "json_array",
        "json_string",
        "json_null",
        "empty",
        "empty_object",
        "missing_status",
        "missing_id",
        "unknown_status",
        "status_upper_case",
        "status_number",
        "status_null",
        "id_number",
        "id_object",
        "deeply_nested",
    ],
)
async def test_bad_webhook_bodies_are_4xx_and_change_nothing(
    stack: Stack,
    user: User,
    http: httpx.AsyncClient,
    held_job: dict[str, Any],
    case: str,
) -> None:
    before = (await user.get(held_job["id"])).json()
    response = await _post(stack, http, _bodies(held_job["predictionId"])[case])
    assert_error(response, 400, "VALIDATION_ERROR")
    after = (await user.get(held_job["id"])).json()
    assert after["status"] == before["status"] == "processing"
    assert after["updatedAt"] == before["updatedAt"]
    assert (await user.usage())["used"] == 1


async def test_body_that_is_not_utf8_is_refused(
    stack: Stack, user: User, http: httpx.AsyncClient, held_job: dict[str, Any]
) -> None:
    """Signed over its raw bytes; the gateway only verifies UTF-8 text, so 401 (or 400)."""
    body = b'{"id": "' + held_job["predictionId"].encode() + b'", "status": "failed\xff"}'
    response = await http.post(
        f"{stack.gateway.base_url}{WEBHOOK_PATH}",
        content=body,
        headers=sign_bytes(stack.emulator.webhook_secret, body),
    )
    assert_error(response, {400, 401})
    assert (await user.get(held_job["id"])).json()["status"] == "processing"
    assert (await user.usage())["used"] == 1


async def test_too_large_webhook_body_is_413(
    stack: Stack, user: User, held_job: dict[str, Any]
) -> None:
    """Refused on the declared length alone, before a byte of the body is read.

    A raw socket sends the head only: the gateway answers and closes without draining.
    Had body bytes been sent too, they would sit unread in the gateway's socket when it
    closes, the kernel would answer them with a reset, and the reset can discard the 413
    before the client reads it (a flake seen under load).
    """
    padding = "x" * (2 * 1024 * 1024)
    body = json.dumps({"id": held_job["predictionId"], "status": "failed", "logs": padding})
    headers = signed(stack.emulator.webhook_secret, body.encode())
    head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: gateway\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"x-request-id:" in rest.lower()
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "VALIDATION_ERROR"
    assert (await user.get(held_job["id"])).json()["status"] == "processing"
    assert (await user.usage())["used"] == 1


async def test_a_correct_event_is_applied(
    stack: Stack, user: User, http: httpx.AsyncClient, held_job: dict[str, Any]
) -> None:
    """The same signing makes a good event count: the refusals above are about the body."""
    body = json.dumps(
        {"id": held_job["predictionId"], "status": "failed", "error": "boom"}
    ).encode()
    response = await _post(stack, http, body)
    assert response.status_code == 200, response.text
    after = (await user.get(held_job["id"])).json()
    assert after["status"] == "failed"
    assert (await user.usage())["used"] == 0  # refunded
