"""Following a job's Server-Sent Events as a client would, timed; a second edge."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from edge_api.app import create_app as create_edge_app
from edge_api.state import EdgeState
from kit.runtime_config import load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.servers import ThreadedUvicorn
from tests.e2e.harness import Stack, make_token

TERMINAL = {"succeeded", "failed", "canceled"}
WAIT = 20.0


@dataclass
class Stream:
    """What one SSE connection received, when, and whether the server ended it."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    # Each message's lines as sent, and when it arrived (monotonic).
    raw: list[list[str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    comment_times: list[float] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False

    @property
    def statuses(self) -> list[str]:
        return [message["status"] for message in self.messages]

    @property
    def comments(self) -> int:
        return len(self.comment_times)

    def seen_at(self, status: str) -> float:
        """When the first message with ``status`` arrived."""
        return next(
            at
            for message, at in zip(self.messages, self.times, strict=True)
            if message["status"] == status
        )

    def writes(self) -> list[float]:
        """When anything (a message, a comment) arrived, in order."""
        return sorted(self.times + self.comment_times)


async def follow(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, Any],
    stream: Stream,
    *,
    params: dict[str, str] | None = None,
    timeout: float = WAIT,
) -> None:
    """Read the stream into ``stream`` until the server ends it."""
    async with client.stream("GET", url, headers=headers, params=params, timeout=timeout) as answer:
        assert answer.status_code == 200, await answer.aread()
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-store"
        stream.headers = dict(answer.headers)
        lines: list[str] = []
        async for line in answer.aiter_lines():
            now = time.monotonic()
            if line.startswith(":"):
                stream.comment_times.append(now)
            elif line == "":
                if lines:
                    event = dict(item.partition(": ")[::2] for item in lines)
                    assert event["event"] == "job"
                    stream.raw.append(lines)
                    stream.ids.append(int(event["id"]))
                    stream.messages.append(json.loads(event["data"]))
                    stream.times.append(now)
                lines = []
            else:
                lines.append(line)
    stream.ended = True


async def until(done: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def second_edge(stack: Stack, **settings: Any) -> AsyncIterator[tuple[str, EdgeState]]:
    """Another edge on the same services (``settings`` on top), its change feed caught
    up (a stream that reads its job before that reads it once more after): its API
    base URL and its state."""
    app = create_edge_app(stack.edge_settings(**settings), load_runtime_config(REPO_RUNTIME_CONFIG))
    edge = ThreadedUvicorn(app, name="second-edge").start()
    try:
        # Any GET of a job starts the feed (a 404 here); then it catches up.
        async with httpx.AsyncClient(base_url=edge.base_url) as client:
            await client.get(
                f"/api/v1/generations/{uuid.uuid4()}",
                headers={"Authorization": f"Bearer {make_token(uuid.uuid4())}"},
            )
        state: EdgeState = app.state.edge
        await until(lambda: state.feed.caught_up)
        yield f"{edge.base_url}/api/v1", state
    finally:
        edge.stop()
