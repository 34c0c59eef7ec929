"""Settled jobs answered at the edge: two edges, two generation instances, one database.

Edge A follows instance A, edge B follows instance B (the webhook gateway's too).
Each edge keeps the views of settled jobs it served and answers them from memory
while its change feed is live. Under concurrent deletes, webhooks and feed
restarts, the edge that took a DELETE never shows the deleted variants again and
the other shows the deletion within 250 ms; someone else's cached job is a 404;
with the feed down every GET goes to generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from edge_api.app import create_app as create_edge_app
from edge_api.state import EdgeState
from interior.generation.v1 import generation_pb2_grpc
from testkit.feed import end_listen_connections, frozen, listen_backends
from testkit.servers import ThreadedUvicorn
from tests.concurrency.cluster import EDGE_DEADLINE_SECONDS, Cluster, _config
from tests.e2e.harness import jpeg_bytes, make_token

# The other edge must show a deletion this soon after the DELETE's reply.
PROPAGATION_SECONDS = 0.25
# ... and, when its feed froze with its connections open, this soon: the edge's
# FEED_FRESHNESS_SECONDS (0.24) past the last mark's probe, and the mark's travel (not
# counted in its age: up to a few hundred ms on a loaded machine). Without the bound it
# is the probe's 4 s timeout and more.
FROZEN_FEED_SECONDS = 0.5
WAIT = 20.0


@dataclass
class Edge:
    """One edge process's HTTP server and the state behind it."""

    server: ThreadedUvicorn
    state: EdgeState

    @property
    def api(self) -> str:
        return f"{self.server.base_url}/api/v1"

    @property
    def hits(self) -> int:
        return self.state.feed.settled.hits


def _edge(cluster: Cluster, instance: int, name: str) -> Edge:
    settings = cluster.stack.edge_settings(
        instance, GRPC_DEADLINE_SECONDS=EDGE_DEADLINE_SECONDS, FEED_SILENCE_SECONDS=1.0
    )
    app = create_edge_app(settings, _config())
    return Edge(ThreadedUvicorn(app, name=name).start(), app.state.edge)


@pytest.fixture(scope="module")
async def edges(cluster: Cluster) -> AsyncIterator[tuple[Edge, Edge]]:
    pair = (
        _edge(cluster, 0, "edge-a"),
        _edge(cluster, 1, "edge-b"),
    )
    try:
        yield pair
    finally:
        for edge in pair:
            edge.server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


class Owner:
    """A user with a token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.id = uuid.uuid4()
        self.http = http
        self.headers = {"Authorization": f"Bearer {make_token(self.id)}"}

    async def get(self, edge: Edge, job_id: str) -> httpx.Response:
        return await self.http.get(f"{edge.api}/generations/{job_id}", headers=self.headers)

    async def delete(self, edge: Edge, job_id: str) -> httpx.Response:
        return await self.http.delete(f"{edge.api}/generations/{job_id}", headers=self.headers)

    async def submit(self, edge: Edge, prompt: str) -> str:
        response = await self.http.post(
            f"{edge.api}/generations",
            json={"mode": "imagine", "prompt": prompt},
            headers=self.headers,
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    async def finished(self, edge: Edge, prompt: str) -> str:
        job_id = await self.submit(edge, prompt)
        await _until(lambda: self.get(edge, job_id), lambda body: body["status"] == "succeeded")
        return job_id


async def _until(
    fetch: Callable[[], Awaitable[httpx.Response]], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            response = await fetch()
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if done(body):
                return body
            await asyncio.sleep(0.02)


async def _caught_up(*edges: Edge) -> None:
    """Wait until each edge's feed is live (a GET starts a feed that a restart stopped)."""
    async with httpx.AsyncClient() as http:
        for edge in edges:
            await http.get(f"{edge.api}/generations/{uuid.uuid4()}", headers=Owner(http).headers)
    async with asyncio.timeout(WAIT):
        while not all(edge.state.feed.caught_up for edge in edges):
            await asyncio.sleep(0.01)


def _get_calls() -> float:
    """GetGeneration calls answered by either generation instance (one process)."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if (
                sample.name == "grpc_server_handled_total"
                and sample.labels.get("grpc_method") == "GetGeneration"
            ):
                total += sample.value
    return total


def _cancel_upstream(edge: Edge) -> None:
    """Cancel the edge's upstream stream (its feed task), from outside its loop."""
    task = edge.state.feed._task  # the test breaks the stream as a crash would
    if task is not None:
        task.get_loop().call_soon_threadsafe(task.cancel)


async def test_settled_views_come_from_memory_for_their_owner_only(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    edge, _ = edges
    owner, stranger = Owner(client), Owner(client)
    job_id = await owner.finished(edge, "A calm study with oak shelves")
    await _caught_up(edge)
    first = await owner.get(edge, job_id)  # may be the one that fills the cache
    calls, hits = _get_calls(), edge.hits
    for _ in range(5):
        again = await owner.get(edge, job_id)
        assert again.json() == first.json()
    assert (_get_calls(), edge.hits) == (calls, hits + 5)

    foreign = await stranger.get(edge, job_id)
    unknown = await stranger.get(edge, str(uuid.uuid4()))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert edge.hits == hits + 5


async def test_a_refused_delete_leaves_the_job_to_memory(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    """A DELETE answered 404 (someone else's job) changed nothing: unlike a DELETE call
    that failed on the way, it must not turn the job's caching off on this edge."""
    edge, _ = edges
    owner, stranger = Owner(client), Owner(client)
    job_id = await owner.finished(edge, "A sunlit hallway with a runner")
    await _caught_up(edge)
    refused = await client.delete(f"{edge.api}/generations/{job_id}", headers=stranger.headers)
    assert refused.status_code == 404
    first = await owner.get(edge, job_id)  # may be the one that fills the cache
    assert first.json()["variants"] != []
    hits = edge.hits
    for _ in range(3):
        await owner.get(edge, job_id)
    assert edge.hits == hits + 3


async def test_deleting_a_failed_job_reaches_the_other_edge(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    """A failed job has no render, yet its DELETE changes what GET shows (no inputs, a
    new updatedAt): the other edge must drop its view as for a succeeded job's."""
    taker, other = edges
    owner = Owner(client)
    await cluster.stack.control("set_faults", fail_next=1)
    submitted = await client.post(
        f"{taker.api}/generations",
        data={"mode": "redesign", "roomType": "living_room", "style": "japandi"},
        files={"input1": ("room.jpg", jpeg_bytes(), "image/jpeg")},
        headers=owner.headers,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    await _until(lambda: owner.get(taker, job_id), lambda body: body["status"] == "failed")
    await _caught_up(taker, other)
    assert (await owner.get(other, job_id)).json()["inputs"]
    hits = other.hits
    assert (await owner.get(other, job_id)).json()["inputs"]
    assert other.hits == hits + 1  # the other edge answers it from memory

    deleted = await owner.delete(taker, job_id)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["inputs"] == []
    await asyncio.sleep(PROPAGATION_SECONDS)
    shown = (await owner.get(other, job_id)).json()
    assert (shown["inputs"], shown["updatedAt"]) == ([], deleted.json()["updatedAt"])


async def test_with_the_feed_down_every_get_asks_generation(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    edge, _ = edges
    owner = Owner(client)
    job_id = await owner.finished(edge, "A bright kitchen with a long table")
    await _caught_up(edge)
    await owner.get(edge, job_id)
    feed = edge.state.feed
    working = feed._stub  # the test points the feed at a dead address and back
    feed._stub = lambda: generation_pb2_grpc.GenerationServiceStub(
        grpc.aio.insecure_channel("127.0.0.1:9")
    )
    try:
        _cancel_upstream(edge)
        async with asyncio.timeout(WAIT):
            while feed.caught_up:
                await asyncio.sleep(0.01)
        calls, hits = _get_calls(), edge.hits
        for _ in range(4):
            assert (await owner.get(edge, job_id)).status_code == 200
        assert (_get_calls(), edge.hits) == (calls + 4, hits)
    finally:
        feed._stub = working
    await _caught_up(edge)
    calls = _get_calls()
    await owner.get(edge, job_id)  # the resume emptied the cache: asked once, kept
    await owner.get(edge, job_id)
    assert _get_calls() == calls + 1


@dataclass
class Outcome:
    delay: float
    stale_after_delete: int
    # GETs of the other edge sent past PROPAGATION_SECONDS that still showed the variants.
    late_on_the_other_edge: int


async def _delete_and_watch(owner: Owner, job_id: str, taker: Edge, other: Edge) -> Outcome:
    """DELETE on ``taker`` while it is read there; poll ``other`` until it shows it."""
    deleted_at: float | None = None
    stale = 0
    stop = asyncio.Event()

    async def read_taker() -> None:
        nonlocal stale
        while not stop.is_set():
            started = time.monotonic()
            response = await owner.get(taker, job_id)
            assert response.status_code == 200, response.text
            if deleted_at is not None and started > deleted_at and response.json()["variants"]:
                stale += 1
            await asyncio.sleep(0.005)

    reader = asyncio.create_task(read_taker())
    try:
        await asyncio.sleep(0.02)
        response = await owner.delete(taker, job_id)
        deleted_at = time.monotonic()
        assert response.status_code == 200, response.text
        assert response.json()["variants"] == []
        delay, late = await _until_shown_on(other, owner, job_id, deleted_at)
        await asyncio.sleep(0.1)  # the taker keeps being read a little after
    finally:
        stop.set()
        await reader
    return Outcome(delay, stale, late)


async def _until_shown_on(
    edge: Edge,
    owner: Owner,
    job_id: str,
    deleted_at: float,
    bound: float = PROPAGATION_SECONDS,
) -> tuple[float, int]:
    """Poll ``edge`` until it shows the deletion: how long after the DELETE's reply the
    first GET that showed it was sent, and how many GETs sent more than ``bound``
    seconds after the reply still showed the variants. A GET sent before that bound
    may be answered after it (a loaded machine), and stale: that is allowed."""
    late = 0
    async with asyncio.timeout(WAIT):
        while True:
            sent = time.monotonic()
            response = await owner.get(edge, job_id)
            assert response.status_code == 200, response.text
            if response.json()["variants"] == []:
                return sent - deleted_at, late
            if sent - deleted_at > bound:
                late += 1
            await asyncio.sleep(0.02)


async def _chaos(cluster: Cluster, edges: tuple[Edge, Edge], stop: asyncio.Event) -> int:
    """Restart feeds while deletions run: LISTEN connections killed, streams cancelled."""
    restarts = 0
    while not stop.is_set():
        if restarts % 2 == 0:
            await end_listen_connections(cluster.stack.generation.context.sessions)
        else:
            _cancel_upstream(edges[restarts % 4 // 2])
        restarts += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.15)
    return restarts


async def test_deletions_race_webhooks_and_feed_restarts(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    owners = [Owner(client) for _ in range(6)]
    jobs = await asyncio.gather(
        *(o.finished(edges[i % 2], f"A loft number {i}") for i, o in enumerate(owners))
    )
    await _caught_up(*edges)
    for owner, job_id in zip(owners, jobs, strict=True):
        for edge in edges:  # both edges now hold the view with its variants
            assert (await owner.get(edge, job_id)).json()["variants"]
    # Meanwhile other jobs run to the end: webhooks reach instance B throughout.
    busy = [Owner(client) for _ in range(3)]
    running = [
        asyncio.create_task(o.finished(edges[i % 2], f"A porch {i}")) for i, o in enumerate(busy)
    ]
    stop = asyncio.Event()
    outcomes = []
    chaos: asyncio.Task[int] | None = None
    for round_ in range(2):  # taken by either edge; the second half during feed restarts
        if round_ == 1:
            chaos = asyncio.create_task(_chaos(cluster, edges, stop))
        outcomes += await asyncio.gather(
            *(
                _delete_and_watch(o, j, edges[(i + round_) % 2], edges[(i + round_ + 1) % 2])
                for i, (o, j) in enumerate(zip(owners, jobs, strict=True))
                if i % 2 == round_
            )
        )
    stop.set()
    assert chaos is not None
    restarts = await chaos
    await asyncio.gather(*running)

    delays = sorted(outcome.delay for outcome in outcomes)
    print(
        f"deletion seen on the other edge: p50 {statistics.median(delays) * 1000:.0f} ms,"
        f" max {delays[-1] * 1000:.0f} ms over {len(delays)}; {restarts} feed restarts"
    )
    assert restarts >= 2
    assert [outcome.stale_after_delete for outcome in outcomes] == [0] * len(owners)
    assert [outcome.late_on_the_other_edge for outcome in outcomes] == [0] * len(owners)


async def test_a_restarted_instance_resumes_and_empties_the_cache(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    edge_a, edge_b = edges
    owner = Owner(client)
    job_id = await owner.finished(edge_a, "A narrow hallway with a runner")
    await _caught_up(*edges)
    assert (await owner.get(edge_b, job_id)).json()["variants"]
    assert (await owner.get(edge_b, job_id)).json()["variants"]
    assert len(edge_b.state.feed.settled) >= 1

    await cluster.restart_second()
    # The stream's end emptied the cache (it cannot know what it missed); it resumed.
    async with asyncio.timeout(WAIT):
        while not (edge_b.state.feed.caught_up and len(edge_b.state.feed.settled) == 0):
            await asyncio.sleep(0.01)
    hits = edge_b.hits
    await owner.get(edge_b, job_id)
    await owner.get(edge_b, job_id)
    assert edge_b.hits == hits + 1

    outcome = await _delete_and_watch(owner, job_id, edge_a, edge_b)
    assert outcome.stale_after_delete == 0
    assert outcome.late_on_the_other_edge == 0


async def test_a_deaf_listening_connection_stops_the_views_it_vouched_for(
    cluster: Cluster, edges: tuple[Edge, Edge], client: httpx.AsyncClient
) -> None:
    """A LISTEN connection can die without closing (a NAT's idle timeout, a failover
    without a reset): no change reaches its instance's followers, and an edge would
    answer a deleted render from memory for as long as its stream stays open. Here
    every instance's listening server process is stopped: sockets open, nothing heard.
    The other edge shows the deletion within a second all the same."""
    edge_a, edge_b = edges
    owner = Owner(client)
    job_id = await owner.finished(edge_a, "A study with a green lamp")
    await _caught_up(*edges)
    assert (await owner.get(edge_b, job_id)).json()["variants"]
    hits = edge_b.hits
    assert (await owner.get(edge_b, job_id)).json()["variants"]
    assert edge_b.hits == hits + 1  # answered from memory

    pids = await listen_backends(cluster.stack.generation.context.sessions)
    assert len(pids) == 2
    # Bounded: a server process stopped while it held a lock would stall others.
    with frozen(pids):
        async with asyncio.timeout(WAIT):
            response = await owner.delete(edge_a, job_id)
            deleted_at = time.monotonic()
            assert response.status_code == 200, response.text
            # The streams stay open for a second more (until a probe times out and
            # generation ends them): the marks that stopped coming make edge_b ask.
            delay, late = await _until_shown_on(
                edge_b, owner, job_id, deleted_at, FROZEN_FEED_SECONDS
            )
        body = (await owner.get(edge_b, job_id)).json()
        assert body["status"] == "succeeded"
    assert late == 0, f"shown {delay:.3f} s after the DELETE's reply"
    await _caught_up(*edges)
