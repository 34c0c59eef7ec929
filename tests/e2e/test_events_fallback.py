"""Event streams when the change feed cannot vouch for itself.

The SPEC: "after a write is acknowledged, the instance that took it shows it at once,
and every other instance within 250 ms; an instance that cannot follow changes serves
from the source of truth instead". GET's settled views ask generation once the feed's
last mark is older than FEED_FRESHNESS_SECONDS; an event stream learned of a change
only from the feed (or its job's timed read, every stale interval): with the LISTEN
connection deaf, or a burst of other jobs' changes queued ahead, an acknowledged
cancel stayed hidden for seconds, on the edge that took it too. Now the edge that
takes a cancel shows it to its watchers at once, and while the feed cannot vouch for
itself each watched job is read from generation every 0.2 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from kit.db import session_scope
from testkit.feed import frozen, listen_backends
from tests.e2e.harness import Stack, User
from tests.e2e.sse_client import TERMINAL, WAIT, Stream, follow, second_edge, until

# Generous against the SPEC's 250 ms on a loaded 2-core machine; the defect was seconds.
BOUND = 1.0
# The edges' regular timed read (every stale interval) would show the change by chance:
# moved out of the measured window, so that the fallback alone is measured.
NO_TIMED_READ = 60.0


@pytest.fixture(autouse=True)
async def _faults_off(stack: Stack) -> AsyncIterator[None]:
    yield
    await stack.control("set_faults", hold=False, drop_webhooks=0, latency_ms=0)


def _events(api: str, job_id: str) -> str:
    return f"{api}/generations/{job_id}/events"


async def _cancel(user: User, api: str, job_id: str) -> httpx.Response:
    answer = await user.client.patch(
        f"{api}/generations/{job_id}", json={"action": "cancel"}, headers=user.headers
    )
    assert answer.status_code == 200, answer.text
    return answer


async def test_a_cancel_shows_on_every_edge_while_the_listen_connection_is_deaf(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    job_id = (await user.submit("imagine", prompt="A quiet study")).json()["id"]
    async with (
        second_edge(stack, SSE_REFRESH_SECONDS=NO_TIMED_READ) as (taker, _),
        second_edge(stack, SSE_REFRESH_SECONDS=NO_TIMED_READ) as (other, _),
    ):
        here, there = Stream(), Stream()
        watchers = [
            asyncio.create_task(follow(user.client, _events(api, job_id), user.headers, stream))
            for api, stream in ((taker, here), (other, there))
        ]
        await until(lambda: here.statuses[-1:] == there.statuses[-1:] == ["processing"])
        pids = await listen_backends(stack.generation.context.sessions)
        assert pids
        with frozen(pids):
            await asyncio.sleep(0.3)  # the marks stop: neither edge's feed vouches now
            await _cancel(user, taker, job_id)
            acknowledged = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*watchers), WAIT)

    assert here.seen_at("canceled") - acknowledged < BOUND
    assert there.seen_at("canceled") - acknowledged < BOUND


async def test_a_cancel_shows_at_once_while_the_feed_works_off_a_burst(
    stack: Stack, user: User
) -> None:
    """A burst of changes (many users' writes at once) is passed on one change at a
    time, each with the job read for it; a change committed after it waits behind it."""
    fillers = [User(stack, user.client) for _ in range(20)]
    filler_jobs = [
        (await filler.submit("imagine", prompt=f"A filler room {i}")).json()["id"]
        for i, filler in enumerate(fillers)
    ]
    for filler, job in zip(fillers, filler_jobs, strict=True):
        await filler.wait_for(job, TERMINAL)
    await stack.control("set_faults", hold=True)
    job_id = (await user.submit("imagine", prompt="A reading nook")).json()["id"]
    async with second_edge(stack, SSE_REFRESH_SECONDS=NO_TIMED_READ) as (api, _):
        stream = Stream()
        watcher = asyncio.create_task(
            follow(user.client, _events(api, job_id), user.headers, stream, timeout=60)
        )
        await until(lambda: stream.statuses[-1:] == ["processing"])
        async with session_scope(stack.generation.context.sessions) as session:
            for _ in range(6000 // len(filler_jobs)):
                await session.execute(
                    text("UPDATE generation_jobs SET version = nextval('job_versions')"
                         " WHERE id = ANY(:ids)"),
                    {"ids": filler_jobs},
                )  # fmt: skip
        await _cancel(user, api, job_id)
        acknowledged = time.monotonic()
        await asyncio.wait_for(watcher, 60)

    assert stream.seen_at("canceled") - acknowledged < BOUND


async def test_a_slow_timed_read_keeps_the_heartbeat_going(stack: Stack, user: User) -> None:
    """The timed read of a stale running job makes generation poll the provider; while
    a slow provider holds it, the stream still writes a comment every heartbeat."""
    heartbeat, provider_ms = 0.5, 1500
    await stack.control("set_faults", hold=True, drop_webhooks="all")
    job_id = (await user.submit("imagine", prompt="A wine cellar")).json()["id"]
    async with second_edge(stack, SSE_HEARTBEAT_SECONDS=heartbeat, SSE_REFRESH_SECONDS=0.3) as (
        api,
        _,
    ):
        stream = Stream()
        watcher = asyncio.create_task(
            follow(user.client, _events(api, job_id), user.headers, stream)
        )
        await until(lambda: stream.statuses[-1:] == ["processing"] and stream.comments >= 2)
        await stack.control("set_faults", latency_ms=provider_ms)
        stack.clock.advance(timedelta(minutes=1))  # the job is stale: the read polls
        watched_from = len(stream.writes())
        await asyncio.sleep(provider_ms / 1000 + 1.0)
        await stack.control("set_faults", latency_ms=0)
        writes = stream.writes()[max(0, watched_from - 1) :]
        assert (await user.cancel(job_id)).status_code == 200
        await asyncio.wait_for(watcher, WAIT)

    assert max(later - earlier for earlier, later in itertools.pairwise(writes)) <= 2 * heartbeat
