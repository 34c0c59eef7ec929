"""A signed webhook naming an output outside the delivery hosts: never fetched, the job
fails with OUTPUT_REFUSED, the generation comes back once, the webhook is answered OK."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from generation.persistence.models import GenerationJob, Render
from kit.db import session_scope
from replicate_emulator.signing import new_message_id, sign
from tests.e2e.harness import Stack, User, jpeg_bytes, wait_until


class CountingServer:
    """A real HTTP server on 127.0.0.1 that would hand out a 'secret' image."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret")
        await writer.drain()
        writer.close()


@pytest.fixture
async def internal_server() -> AsyncIterator[CountingServer]:
    counting = CountingServer()
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    counting.port = server.sockets[0].getsockname()[1]
    try:
        yield counting
    finally:
        server.close()
        await server.wait_closed()


async def _post_signed(stack: Stack, http: httpx.AsyncClient, event: dict[str, Any]) -> int:
    body = json.dumps(event).encode()
    headers = sign(stack.emulator.webhook_secret, new_message_id(), body).as_dict()
    response = await http.post(
        f"{stack.gateway.base_url}/api/v1/webhooks/replicate", content=body, headers=headers
    )
    return response.status_code


async def _settled_usage(user: User, used: int) -> dict[str, Any]:
    return await wait_until(
        lambda: user.client.get(f"{user.stack.api}/usage", headers=user.headers),
        lambda body: body["used"] == used,
        timeout=5.0,
    )


@pytest.mark.parametrize(
    "output",
    [
        "http://127.0.0.1:{port}/secret.jpg",
        "http://localhost:{port}/secret.jpg",
        "https://replicate.delivery@127.0.0.1:{port}/secret.jpg",
    ],
)
async def test_a_signed_webhook_pointing_at_a_local_server_is_refused(
    stack: Stack,
    user: User,
    http: httpx.AsyncClient,
    internal_server: CountingServer,
    output: str,
) -> None:
    await stack.control("set_faults", hold=True)
    submitted = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert submitted.status_code == 202, submitted.text
    job_id, prediction_id = submitted.json()["id"], submitted.json()["predictionId"]
    event = await stack.control("prediction", prediction_id)
    event.update(status="succeeded", output=output.format(port=internal_server.port))

    # Answered OK (no retry storm), twice: the second delivery changes nothing.
    assert await _post_signed(stack, http, event) == 200
    assert await _post_signed(stack, http, event) == 200

    body = (await user.get(job_id)).json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "OUTPUT_REFUSED"
    # Nothing of the refused URL reaches the user (the inputs' signed links are the
    # user's own and point at the S3 server, which listens on loopback here too).
    shown = json.dumps({**body, "inputs": []})
    assert "127.0.0.1" not in shown
    assert str(internal_server.port) not in shown
    assert (await _settled_usage(user, used=0))["used"] == 0
    assert internal_server.connections == 0
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
        renders = await session.scalar(
            select(func.count()).select_from(Render).where(Render.job_id == uuid.UUID(job_id))
        )
    assert job is not None
    assert job.refund_state == "done"
    assert renders == 0
