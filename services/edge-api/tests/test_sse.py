"""The lean SSE response and the feed's shared ticker (edge_api.sse, edge_api.feed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from types import SimpleNamespace

import grpc
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from structlog.testing import capture_logs

from edge_api.feed import RECENT_CHANGES, JobFeed, Timings
from edge_api.routes.events import _producer
from edge_api.settled import SettledJobs
from edge_api.sse import (
    BEAT,
    CHANGED,
    GONE,
    REFRESH,
    STOPPING,
    EventStreamResponse,
    Watch,
    Write,
)
from interior.generation.v1 import generation_pb2
from kit.wire import FEED_MARKS_WITHIN
from testkit.servers import ThreadedUvicorn

WAIT = 10.0


async def _until(done: object, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not done():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def _unreachable_generation() -> object:
    raise ConnectionError("no generation in this test")  # the feed stops; the ticker goes on


async def test_a_watch_collects_reasons_until_taken() -> None:
    watch = Watch()
    watch.wake(BEAT)
    watch.wake(CHANGED)
    assert await watch.wait() == BEAT | CHANGED

    sleeper = asyncio.create_task(watch.wait())
    await asyncio.sleep(0.01)
    assert not sleeper.done()  # nothing new: it sleeps
    watch.wake(GONE)
    assert await asyncio.wait_for(sleeper, WAIT) == GONE


async def test_one_ticker_beats_every_stream_and_refreshes_one_per_job() -> None:
    feed = JobFeed(_unreachable_generation, SettledJobs(10, 60.0), Timings(0.05, 0.05))  # type: ignore[arg-type]
    beats: Counter[Watch] = Counter()
    refreshes: Counter[Watch] = Counter()

    async def count(watch: Watch) -> None:
        while True:
            reasons = await watch.wait()
            beats[watch] += bool(reasons & BEAT)
            refreshes[watch] += bool(reasons & REFRESH)

    with ExitStack() as held:
        watches = [held.enter_context(feed.watch(f"job-{i % 10}")) for i in range(300)]
        counters = [asyncio.create_task(count(watch)) for watch in watches]
        await _until(lambda: all(beats[watch] >= 3 for watch in watches))
        tickers = [t for t in asyncio.all_tasks() if t.get_name() == "edge-sse-ticker"]
        for counter in counters:
            counter.cancel()
    leaders = watches[:10]  # the first watcher of each job
    assert len(tickers) == 1  # one timer for all 300 streams
    assert all(refreshes[watch] >= 1 for watch in leaders)
    assert sum(refreshes[watch] for watch in watches[10:]) == 0
    await feed.close()


async def test_the_timed_read_goes_to_an_idle_watcher_not_one_stuck_writing() -> None:
    """A client that stops reading holds its stream's write for as long as it likes; the
    job's timed read (the stale refresh that shows a lost webhook) must not wait on it."""
    feed = JobFeed(_unreachable_generation, SettledJobs(10, 60.0), Timings(0.05, 0.05))  # type: ignore[arg-type]
    refreshed = asyncio.Event()

    async def idle(watch: Watch) -> None:
        while True:
            if await watch.wait() & REFRESH:
                refreshed.set()

    with feed.watch("job-1") as stuck, feed.watch("job-1") as other:
        stuck.wake(CHANGED)  # it never takes this: it is busy writing to its client
        listener = asyncio.create_task(idle(other))
        await asyncio.wait_for(refreshed.wait(), WAIT)
        listener.cancel()
    assert stuck.pending(REFRESH)  # given one, never taken: the next went to the other
    await feed.close()


@contextmanager
def _server(ended: threading.Event) -> Iterator[str]:
    async def endless(watch: Watch, write: Write) -> None:
        await write(b": hello\n\n")
        while not await watch.wait() & GONE:
            pass
        ended.set()

    async def route(_: Request) -> EventStreamResponse:
        return EventStreamResponse(lambda: _watching(), endless)

    @contextmanager
    def _watching() -> Iterator[Watch]:
        yield Watch()

    server = ThreadedUvicorn(Starlette(routes=[Route("/s", route)]), name="sse-test").start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def test_a_stream_ends_when_its_client_goes_away() -> None:
    ended = threading.Event()
    with _server(ended) as base_url:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=WAIT) as client,
            client.stream("GET", "/s") as answer,
        ):
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert await anext(answer.aiter_lines()) == ": hello"
            assert not ended.is_set()
        # The client left: the stream's task is woken (no heartbeat needed) and ends.
        await _until(ended.is_set)


class _Call:
    """A WatchJobs call as the feed uses it: its initial metadata read, iterated, then
    cancelled. ``marks_within``: what generation announces (None: an older generation,
    no heartbeats)."""

    def __init__(self, items: AsyncIterator[object], marks_within: str | None = None) -> None:
        self._items = items
        self._marks_within = marks_within
        self.cancelled = False

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._marks_within is None:
            return grpc.aio.Metadata()
        return grpc.aio.Metadata((FEED_MARKS_WITHIN, self._marks_within))

    def __aiter__(self) -> AsyncIterator[object]:
        return self._items

    def cancel(self) -> None:
        self.cancelled = True


class _Upstream:
    """A WatchJobs stub: caught up at 6, then ``changes`` (of ``job-a`` at version 7),
    then ``burst`` changes of other jobs (versions 8 on), then an open, quiet stream."""

    def __init__(self, changes: int, burst: int = 0) -> None:
        self.changes = changes
        self.burst = burst
        self.delivered = asyncio.Event()

    def WatchJobs(self, request: generation_pb2.WatchJobsRequest, timeout: float) -> object:
        return _Call(self._items())

    async def _items(self) -> AsyncIterator[generation_pb2.WatchJobsResponse]:
        yield generation_pb2.WatchJobsResponse(caught_up=6)
        if not self.changes:
            self.delivered.set()
            await asyncio.Event().wait()
        job = generation_pb2.Job(id="job-a", status=generation_pb2.JOB_STATUS_PROCESSING, version=7)
        change = generation_pb2.JobChange(version=7, job_id="job-a", owner_id="o", job=job)
        yield generation_pb2.WatchJobsResponse(change=change)
        for i in range(self.burst):
            other = generation_pb2.JobChange(version=8 + i, job_id=f"other-{i}", owner_id="o")
            yield generation_pb2.WatchJobsResponse(change=other)
        self.delivered.set()
        await asyncio.Event().wait()  # the stream stays open and quiet


async def test_a_watch_registered_after_a_change_it_did_not_read_is_woken_with_it() -> None:
    # A stream reads the job (version 6), then registers its watch; a change committed
    # in between reached the feed before the watch existed. Without the feed's memory
    # of recent changes that stream would never learn of it (only the job's leading
    # watcher reads on a timer).
    upstream = _Upstream(changes=1)
    feed = JobFeed(lambda: upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type,return-value]
    feed.ensure_running()
    try:
        await asyncio.wait_for(upstream.delivered.wait(), WAIT)
        await asyncio.sleep(0)
        with (
            feed.watch("job-a", known_version=6) as behind,
            feed.watch("job-a", known_version=7) as current,
            feed.watch("job-b", known_version=0) as other,
        ):
            assert await asyncio.wait_for(behind.wait(), WAIT) == CHANGED
            assert behind.news is not None
            assert behind.news.version == 7
            for quiet in (current, other):
                waiting = asyncio.create_task(quiet.wait())
                await asyncio.sleep(0.05)
                assert not waiting.done()
                waiting.cancel()
    finally:
        await feed.close()


async def test_a_change_pushed_out_of_memory_by_a_burst_still_wakes_a_late_watch() -> None:
    # As above, but over RECENT_CHANGES other jobs changed before the watch registered:
    # job-a's change is no longer remembered, so the watch is woken to read the job.
    upstream = _Upstream(changes=1, burst=RECENT_CHANGES)
    feed = JobFeed(lambda: upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type,return-value]
    feed.ensure_running()
    try:
        await asyncio.wait_for(upstream.delivered.wait(), WAIT)
        await asyncio.sleep(0)
        newest = 7 + RECENT_CHANGES
        with (
            feed.watch("job-a", known_version=6) as behind,
            feed.watch("job-a", known_version=newest) as current,
        ):
            assert await asyncio.wait_for(behind.wait(), WAIT) == CHANGED
            assert behind.news is None  # nothing carried: it reads the job
            waiting = asyncio.create_task(current.wait())
            await asyncio.sleep(0.05)
            assert not waiting.done()  # read after every change that was let go
            waiting.cancel()
    finally:
        await feed.close()


@asynccontextmanager
async def _caught_up_feed() -> AsyncIterator[JobFeed]:
    """A feed following a caught-up, quiet upstream."""
    upstream = _Upstream(changes=0)
    feed = JobFeed(lambda: upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type,return-value]
    feed.ensure_running()
    try:
        await asyncio.wait_for(upstream.delivered.wait(), WAIT)
        yield feed
    finally:
        await feed.close()


async def test_what_the_leaders_timed_read_found_reaches_the_jobs_other_watchers() -> None:
    async with _caught_up_feed() as feed:
        with (
            feed.watch("job-a") as leader,
            feed.watch("job-a") as follower,
            feed.watch("job-b") as elsewhere,
        ):
            found = generation_pb2.Job(
                id="job-a", status=generation_pb2.JOB_STATUS_SUCCEEDED, version=9
            )
            feed.share("job-a", found, leader)
            assert await asyncio.wait_for(follower.wait(), WAIT) == CHANGED
            assert follower.news is found
            for untouched in (leader, elsewhere):
                waiting = asyncio.create_task(untouched.wait())
                await asyncio.sleep(0.05)
                assert not waiting.done()
                waiting.cancel()


async def test_an_older_timed_read_never_replaces_newer_news_or_a_due_re_read() -> None:
    async with _caught_up_feed() as feed:
        with (
            feed.watch("job-a") as leader,
            feed.watch("job-a") as ahead,
            feed.watch("job-a") as rereading,
        ):
            newer = generation_pb2.Job(
                id="job-a", status=generation_pb2.JOB_STATUS_SUCCEEDED, version=12
            )
            ahead.news = newer  # the feed's change v12 reached it, not yet sent
            ahead.wake(CHANGED)
            rereading.news = None  # interrupted: it must read the job again
            rereading.wake(CHANGED)
            older = generation_pb2.Job(
                id="job-a", status=generation_pb2.JOB_STATUS_PROCESSING, version=11
            )
            feed.share("job-a", older, leader)
            assert await asyncio.wait_for(ahead.wait(), WAIT) == CHANGED
            assert ahead.news is newer
            assert await asyncio.wait_for(rereading.wait(), WAIT) == CHANGED
            assert rereading.news is None


class _ReplayUpstream:
    """A generation whose WatchJobs reports ``items``, then stays open."""

    def __init__(self, *items: object) -> None:
        self._items = items
        self.calls = 0

    def __call__(self) -> _ReplayUpstream:
        return self

    async def _stream(self) -> AsyncIterator[object]:
        for item in self._items:
            yield item
        await asyncio.Event().wait()

    def WatchJobs(self, request: object, timeout: float) -> _Call:
        self.calls += 1
        return _Call(self._stream())


async def test_the_job_a_change_carries_answers_the_next_get_when_it_is_settled() -> None:
    job_id, owner = "00000000-0000-4000-8000-00000000000a", "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
    done = generation_pb2.Job(id=job_id, status=generation_pb2.JOB_STATUS_SUCCEEDED, version=8)
    upstream = _ReplayUpstream(
        generation_pb2.WatchJobsResponse(caught_up=6),
        generation_pb2.WatchJobsResponse(
            change=generation_pb2.JobChange(version=7, job_id=job_id, owner_id=owner, job=done)
        ),
    )
    feed = JobFeed(upstream, SettledJobs(10, 60.0))  # type: ignore[arg-type]
    feed.ensure_running()
    await _until(lambda: feed.settled.lookup(job_id, owner) is not None)
    assert feed.settled.lookup(job_id, owner) == done
    await feed.close()


class _Beating:
    """Generation's side of WatchJobs: caught up at 6, a settled job at 7 on the first
    stream, then a heartbeat mark every 50 ms while ``beating``."""

    def __init__(self, job: generation_pb2.Job, owner: str) -> None:
        self.job, self.owner = job, owner
        self.beating = True
        self.calls: list[tuple[generation_pb2.WatchJobsRequest, _Call]] = []

    def __call__(self) -> _Beating:
        return self

    def WatchJobs(self, request: generation_pb2.WatchJobsRequest, timeout: float) -> _Call:
        call = _Call(self._stream(first=not self.calls), marks_within="0.05")
        self.calls.append((request, call))
        return call

    async def _stream(self, first: bool) -> AsyncIterator[object]:
        yield generation_pb2.WatchJobsResponse(caught_up=6)
        if first:
            change = generation_pb2.JobChange(
                version=7, job_id=self.job.id, owner_id=self.owner, job=self.job
            )
            yield generation_pb2.WatchJobsResponse(change=change)
        while True:
            await asyncio.sleep(0.05)
            if self.beating:
                yield generation_pb2.WatchJobsResponse(caught_up=7)


async def test_a_silent_upstream_is_given_up_with_the_views_it_vouched_for() -> None:
    # A stream can die without closing (a half-open connection, a frozen instance):
    # nothing arrives, and views of jobs deleted meanwhile would be answered forever.
    job_id, owner = "00000000-0000-4000-8000-00000000000b", "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
    done = generation_pb2.Job(id=job_id, status=generation_pb2.JOB_STATUS_SUCCEEDED, version=7)
    upstream = _Beating(done, owner)
    feed = JobFeed(upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0, silence=0.3))  # type: ignore[arg-type]
    feed.ensure_running()
    try:
        await _until(lambda: feed.settled.lookup(job_id, owner) is not None)
        await asyncio.sleep(1.0)  # marks every 50 ms keep the stream, and keep its views
        assert len(upstream.calls) == 1
        assert upstream.calls[0][0].heartbeats  # asked for: older followers never get marks
        assert feed.caught_up
        assert feed.settled.lookup(job_id, owner) == done

        upstream.beating = False
        await _until(lambda: not feed.caught_up)
        assert feed.settled.lookup(job_id, owner) is None
        assert upstream.calls[0][1].cancelled
        upstream.beating = True
        # Resumed from the last version seen.
        await _until(lambda: len(upstream.calls) == 2 and feed.caught_up)
        assert upstream.calls[1][0].from_version == 7
    finally:
        await feed.close()


async def test_an_upstream_that_announces_no_heartbeat_is_never_given_up_for_silence() -> None:
    # An older generation (a rolling deploy) marks nothing after the replay: its quiet
    # stream must not be taken for dead, resumed and its views dropped every few seconds.
    job_id, owner = "00000000-0000-4000-8000-00000000000c", "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
    done = generation_pb2.Job(id=job_id, status=generation_pb2.JOB_STATUS_SUCCEEDED, version=7)
    upstream = _ReplayUpstream(
        generation_pb2.WatchJobsResponse(caught_up=6),
        generation_pb2.WatchJobsResponse(
            change=generation_pb2.JobChange(version=7, job_id=job_id, owner_id=owner, job=done)
        ),
    )
    feed = JobFeed(upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0, silence=0.1))  # type: ignore[arg-type]
    feed.ensure_running()
    try:
        await _until(lambda: feed.settled.lookup(job_id, owner) is not None)
        await asyncio.sleep(0.5)
        assert upstream.calls == 1  # never given up, never resumed
        assert feed.caught_up
        assert feed.settled.lookup(job_id, owner) == done
    finally:
        await feed.close()


async def test_no_job_is_written_once_the_token_expired_even_after_a_slow_read() -> None:
    """The expiry is checked as each message goes out: a read begun just before the
    token expired (a change the feed did not carry) ends the stream instead."""
    before = generation_pb2.Job(id="job-a", version=1, status=generation_pb2.JOB_STATUS_PROCESSING)
    after = generation_pb2.Job(id="job-a", version=2, status=generation_pb2.JOB_STATUS_PROCESSING)

    class Generation:
        async def GetGeneration(self, request: object, timeout: float, metadata: object) -> object:
            await asyncio.sleep(0.4)  # generation (or its database) busy
            return SimpleNamespace(job=after)

    state = SimpleNamespace(
        connected=lambda: SimpleNamespace(generation=Generation()),
        rpc_timeout=lambda: 10.0,
        feed=SimpleNamespace(share=lambda *args: None, timings=Timings()),
    )
    expires_at = time.time() + 0.2
    produce = _producer(state, "owner", "job-a", before, 1, "http://edge", expires_at)  # type: ignore[arg-type]
    watch = Watch()
    writes: list[bytes] = []

    async def write(data: bytes) -> None:
        writes.append(data)

    producing = asyncio.ensure_future(produce(watch, write))
    await asyncio.sleep(0.05)
    watch.wake(CHANGED)  # before the expiry: the read starts, and ends after it
    await asyncio.wait_for(producing, WAIT)

    assert writes == [b": the access token expired\n\n"]


async def test_a_slow_read_keeps_the_streams_heartbeat_going() -> None:
    """The stream's own task makes its job's reads: one that takes longer than the
    heartbeat (generation polling a slow provider) writes comments meanwhile, instead of
    leaving the stream silent for the heartbeat plus the read."""
    before = generation_pb2.Job(id="job-a", version=1, status=generation_pb2.JOB_STATUS_PROCESSING)
    after = generation_pb2.Job(
        id="7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69",
        version=2,
        status=generation_pb2.JOB_STATUS_CANCELED,
        settings=generation_pb2.JobSettings(mode="redesign"),
    )

    class Generation:
        async def GetGeneration(self, request: object, timeout: float, metadata: object) -> object:
            await asyncio.sleep(1.0)  # a slow provider behind generation's stale refresh
            return SimpleNamespace(job=after)

    state = SimpleNamespace(
        connected=lambda: SimpleNamespace(generation=Generation()),
        rpc_timeout=lambda: 10.0,
        feed=SimpleNamespace(share=lambda *args: None, timings=Timings(heartbeat=0.2)),
    )
    produce = _producer(state, "owner", "job-a", before, 1, "http://edge", time.time() + 60)  # type: ignore[arg-type]
    watch = Watch()
    writes: list[bytes] = []

    async def write(data: bytes) -> None:
        writes.append(data)

    producing = asyncio.ensure_future(produce(watch, write))
    watch.wake(REFRESH)
    await asyncio.wait_for(producing, WAIT)

    assert writes.count(b": keep-alive\n\n") >= 3  # about one per 0.18 s of the 1 s read
    assert writes[-1].startswith(b"id: 2\n")


async def test_stopping_the_streams_ends_those_open_and_those_opened_later() -> None:
    """SIGTERM's hook (edge_api.__main__.EdgeServer): every watcher is told to end, and
    one registered while the edge stops is told at once."""
    feed = JobFeed(_unreachable_generation, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type]
    try:
        with feed.watch("job-a") as open_before:
            feed.stop_streams()
            assert await asyncio.wait_for(open_before.wait(), WAIT) & STOPPING
            with feed.watch("job-b") as opened_later:
                assert await asyncio.wait_for(opened_later.wait(), WAIT) & STOPPING
    finally:
        await feed.close()


class _BrokenOnce(_Upstream):
    """A WatchJobs stub whose first call fails in a way no gRPC error explains (a bug in
    the follower's path), then behaves."""

    def __init__(self) -> None:
        super().__init__(changes=0)
        self.calls = 0

    def WatchJobs(self, request: generation_pb2.WatchJobsRequest, timeout: float) -> object:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug, not a closed channel")
        return super().WatchJobs(request, timeout)


async def test_an_unexpected_failure_of_the_follower_is_logged_and_retried() -> None:
    """Only a closed channel (the process stopping) ends the following for good: any
    other failure is logged with its trace and retried, so a bug cannot silently switch
    the live feed and the settled views off until the process restarts."""
    upstream = _BrokenOnce()
    feed = JobFeed(lambda: upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type,return-value]
    with capture_logs() as logs:
        feed.ensure_running()
        try:
            await asyncio.wait_for(upstream.delivered.wait(), WAIT)
            await _until(lambda: feed.caught_up)
        finally:
            await feed.close()
    assert upstream.calls == 2
    assert [line["event"] for line in logs if line["event"].startswith("feed.")][:1] == [
        "feed.crashed"
    ]
