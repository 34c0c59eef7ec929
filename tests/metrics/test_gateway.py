"""The webhook gateway's metrics over real HTTP: received, rejected by reason, forwarded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from kit.runtime_config import load_runtime_config
from launcher.components import free_port
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.servers import ThreadedUvicorn
from testkit.stack import Stack
from tests.metrics.helpers import Scrape, http_scrape
from webhook_gateway.app import create_app
from webhook_gateway.settings import GatewaySettings

WEBHOOK_PATH = "/api/v1/webhooks/replicate"
REJECTED = "webhook_gateway_webhooks_rejected_total"
FORWARDED = "webhook_gateway_webhooks_forwarded_total"
FAILURES = "webhook_gateway_forward_failures_total"
RECEIVED = "webhook_gateway_webhooks_received_total"


def _signed(
    secret: str, body: bytes, *, age: timedelta = timedelta(), msg_id: str = "msg_metrics"
) -> dict[str, str]:
    moment = datetime.now(UTC) - age
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


async def _declare_too_large(port: int) -> bytes:
    """A request declaring a body over the cap; the gateway answers without reading it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def test_deliveries_are_counted_by_reason_and_outcome(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    base = stack.gateway.base_url
    secret = stack.emulator.webhook_secret
    url = f"{base}{WEBHOOK_PATH}"
    unknown = json.dumps({"id": "metricsunknown0001", "status": "succeeded"}).encode()
    before = await http_scrape(http, base)

    assert (await http.post(url, content=unknown)).status_code == 401
    forged = _signed(secret, unknown) | {"webhook-signature": "v1,AAAA"}
    assert (await http.post(url, content=unknown, headers=forged)).status_code == 401
    stale = _signed(secret, unknown, age=timedelta(hours=1))
    assert (await http.post(url, content=unknown, headers=stale)).status_code == 401
    assert (
        await http.post(url, content=b"[1]", headers=_signed(secret, b"[1]"))
    ).status_code == 400
    assert (await _declare_too_large(stack.gateway.port)).startswith(b"HTTP/1.1 413 ")
    no_id = b'{"status": "succeeded"}'
    assert (await http.post(url, content=no_id, headers=_signed(secret, no_id))).status_code == 400
    answer = await http.post(url, content=unknown, headers=_signed(secret, unknown))
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "unknown_prediction"

    after = await http_scrape(http, base)
    for reason in (
        "missing_signature",
        "bad_signature",
        "stale_timestamp",
        "not_json",
        "too_large",
    ):
        assert _delta(before, after, REJECTED, reason=reason) == 1, reason
    # >=: late deliveries of other in-process stacks share these counters.
    assert _delta(before, after, FORWARDED, outcome="unknown_prediction") >= 1
    assert _delta(before, after, FAILURES, grpc_code="INVALID_ARGUMENT") == 1
    assert _delta(before, after, RECEIVED) >= 7


@pytest.fixture
async def orphan_gateway(stack: Stack) -> AsyncIterator[ThreadedUvicorn]:
    """A gateway whose generation service is not running."""
    settings = GatewaySettings(
        GENERATION_GRPC_TARGET=f"127.0.0.1:{free_port()}",
        REPLICATE_WEBHOOK_SECRET=stack.emulator.webhook_secret,
        GRPC_DEADLINE_SECONDS=1,
    )
    server = ThreadedUvicorn(
        create_app(settings, runtime_config=load_runtime_config(REPO_RUNTIME_CONFIG)),
        name="orphan-gateway",
    ).start()
    yield server
    server.stop()


async def test_forward_failures_are_counted_by_grpc_code(
    stack: Stack, orphan_gateway: ThreadedUvicorn, http: httpx.AsyncClient
) -> None:
    body = json.dumps({"id": "metricsorphan0001", "status": "processing"}).encode()
    before = await http_scrape(http, orphan_gateway.base_url)
    answer = await http.post(
        f"{orphan_gateway.base_url}{WEBHOOK_PATH}",
        content=body,
        headers=_signed(stack.emulator.webhook_secret, body),
    )
    assert answer.status_code == 503
    after = await http_scrape(http, orphan_gateway.base_url)
    assert _delta(before, after, FAILURES, grpc_code="UNAVAILABLE") == 1
