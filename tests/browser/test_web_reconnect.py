"""The reference web client's reconnect notice (web/job.js) goes when it no longer holds.

It used to go only with the next `job` message: after a resume that has nothing to
repeat, or after the page took over from a browser that gave up, it stayed."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Request, Route, expect

from generation.persistence.models import GenerationJob
from kit.db import session_scope
from testkit.stack import Stack
from tests.browser.conftest import Visitor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SETTLE_MS = 20_000
RECONNECTING = "Connection lost, reconnecting…"
WORKING = "Working on your design…"
_EVENTS = re.compile(r".*/generations/([0-9a-f-]+)/events\?.*")


async def _job(visitor: Visitor, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=visitor.edge.url, timeout=10) as client:
        answer = await client.get(
            f"/api/v1/generations/{job_id}", headers={"Authorization": f"Bearer {visitor.token}"}
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _version(stack: Stack, job_id: str) -> int:
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
    assert job is not None
    return int(job.version)


async def _processing(visitor: Visitor, stack: Stack, job_id: str) -> tuple[dict[str, Any], int]:
    """The held job once it is processing (it then stays so), and its version."""
    for _ in range(200):
        job = await _job(visitor, job_id)
        if job["status"] == "processing":
            return job, await _version(stack, job_id)
        await asyncio.sleep(0.05)
    raise AssertionError("the held job never reached processing")


async def _cancel(visitor: Visitor, job_id: str) -> None:
    async with httpx.AsyncClient(base_url=visitor.edge.url, timeout=10) as client:
        await client.patch(
            f"/api/v1/generations/{job_id}",
            json={"action": "cancel"},
            headers={"Authorization": f"Bearer {visitor.token}"},
        )


async def _one_message_then_end(route: Route, visitor: Visitor, stack: Stack) -> str:
    """Answer the page's first stream with one message, then end it (the connection
    dropped: an edge restarted, a proxy cut it); ``retry`` makes the browser come back
    quickly. Returns the job's id, once the job is processing (it then stays so)."""
    match = _EVENTS.match(route.request.url)
    assert match
    job, version = await _processing(visitor, stack, match.group(1))
    await route.fulfill(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
        body=f"retry: 200\nid: {version}\nevent: job\ndata: {json.dumps(job)}\n\n",
    )
    return match.group(1)


async def test_the_reconnecting_notice_goes_once_the_stream_is_resumed(
    visitor: Visitor, stack: Stack
) -> None:
    """A stream drops after its first message; EventSource reconnects with Last-Event-ID
    and the edge accepts it (200, an open stream). The job has not changed, so by the
    contract nothing is repeated: no message comes until the job changes again.

    The page stops saying the connection is lost once the stream is open again."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    requests: list[Request] = []
    job_id = ""

    async def events(route: Route) -> None:
        nonlocal job_id
        requests.append(route.request)
        if len(requests) == 1:
            job_id = await _one_message_then_end(route, visitor, stack)
        else:
            await route.continue_()  # the real edge: resumed after Last-Event-ID

    await page.route(_EVENTS, events)
    recorder = visitor.edge.recorder
    inner = recorder.app
    seen_last_event_ids: list[str | None] = []

    async def noting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and str(scope["path"]).endswith("/events"):
            headers = dict(scope["headers"])
            value = headers.get(b"last-event-id")
            seen_last_event_ids.append(value.decode() if value is not None else None)
        await inner(scope, receive, send)

    recorder.app = noting
    await page.select_option("#mode", "imagine")
    await page.fill("#prompt", "A reading nook under a window")
    await page.click("#submit")
    try:
        await expect(page.locator("#job-status")).to_have_text(WORKING, timeout=SETTLE_MS)
        for _ in range(100):
            if len(requests) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(requests) == 2
        resumed = requests[1]
        # What reached the edge: the resume names the version the page has.
        assert seen_last_event_ids == [str(await _version(stack, job_id))]
        response = await resumed.response()
        assert response is not None
        assert response.status == 200  # the stream is back
        await asyncio.sleep(2.0)
        assert len(requests) == 2  # still connected: no further reconnects
        assert (await _job(visitor, job_id))["status"] == "processing"  # no change since
        await expect(page.locator("#job-notice")).to_be_hidden(timeout=3000)
    finally:
        recorder.app = inner
        if job_id:
            await _cancel(visitor, job_id)


async def test_the_reconnecting_notice_goes_when_the_page_gives_up(
    visitor: Visitor, stack: Stack
) -> None:
    """The stream ends (here: the edge ended it as the token expired); EventSource's
    reconnect is refused with 401 and the page reads the job, which is refused too: it
    says the sign-in expired and stops trying (job.js recover: a lasting 4xx).

    The page no longer says it is reconnecting beside "You are not signed in…"."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    calls = 0
    job_id = ""
    refused = '{"error": {"code": "UNAUTHORIZED", "message": "Unauthorized."}}'

    async def events(route: Route) -> None:
        nonlocal calls, job_id
        calls += 1
        if calls == 1:
            job_id = await _one_message_then_end(route, visitor, stack)
        else:
            await route.fulfill(status=401, content_type="application/json", body=refused)

    async def job_read(route: Route) -> None:
        await route.fulfill(status=401, content_type="application/json", body=refused)

    await page.route(_EVENTS, events)
    await page.route(re.compile(r".*/api/v1/generations/[0-9a-f-]+$"), job_read)
    await page.select_option("#mode", "imagine")
    await page.fill("#prompt", "A reading nook under a window")
    await page.click("#submit")
    try:
        await expect(page.locator("#job-status")).to_have_text(WORKING, timeout=SETTLE_MS)
        await expect(page.locator("#job-error")).to_contain_text(
            "You are not signed in", timeout=SETTLE_MS
        )
        await asyncio.sleep(1.0)
        assert calls == 2  # the browser gave up after the 401; the page did not retry
        await expect(page.locator("#job-notice")).not_to_have_text(RECONNECTING, timeout=2000)
    finally:
        if job_id:
            await _cancel(visitor, job_id)
