"""Two wake-ups a stream could miss: the edge's shared feed (edge_api.feed) and the SSE
producer (routes/events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest

from edge_api import feed as feed_module
from edge_api.feed import JobFeed, Timings
from edge_api.routes.events import _producer
from edge_api.settled import SettledJobs
from edge_api.sse import CHANGED, REFRESH, Watch
from interior.generation.v1 import generation_pb2
from kit.wire import FEED_MARKS_WITHIN

WAIT = 5.0
JOB = "00000000-0000-4000-8000-0000000000aa"
OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"


class _Call:
    def __init__(self, items: AsyncIterator[object]) -> None:
        self._items = items

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata((FEED_MARKS_WITHIN, "60"))

    def __aiter__(self) -> AsyncIterator[object]:
        return self._items

    def cancel(self) -> None:
        pass


class _FreshGeneration:
    """Generation as a fresh edge's first WatchJobs (from_version 0) sees it: no replay
    ("from now on"), the head version as the first mark, then a quiet open stream."""

    def __init__(self, head: int) -> None:
        self.head = head
        self.requests: list[generation_pb2.WatchJobsRequest] = []
        self.caught_up = asyncio.Event()

    def __call__(self) -> _FreshGeneration:
        return self

    def WatchJobs(self, request: generation_pb2.WatchJobsRequest, timeout: float) -> _Call:
        self.requests.append(request)
        return _Call(self._items())

    async def _items(self) -> AsyncIterator[object]:
        yield generation_pb2.WatchJobsResponse(caught_up=self.head)
        self.caught_up.set()
        await asyncio.Event().wait()


async def test_a_watch_whose_read_predates_the_first_catch_up_is_woken() -> None:
    """A fresh edge (just restarted: every EventSource reconnects at once). The feed was
    started by an earlier request and is connecting. Meanwhile a stream reads job J at
    version 5; J changes (version 6) before generation subscribes the edge's feed, so
    the feed's first stream (from_version 0) neither replays it nor reports it live: its
    first mark just says the head is 6, and wakes the watchers registered by then. The
    stream registers its watch right after that (known_version 5, and the feed's epoch
    as it was before its read): it is woken to read J again, as the others were."""
    upstream = _FreshGeneration(head=6)
    feed = JobFeed(upstream, SettledJobs(10, 60.0), Timings(60.0, 60.0))  # type: ignore[arg-type]
    feed.ensure_running()  # started by an earlier GET or stream
    epoch = feed.epoch  # the stream's read happens now, before the catch-up
    try:
        await asyncio.wait_for(upstream.caught_up.wait(), WAIT)
        await asyncio.sleep(0.05)
        assert feed.caught_up
        assert upstream.requests[0].from_version == 0
        with feed.watch(JOB, known_version=5, epoch=epoch) as late:
            woken = await asyncio.wait_for(late.wait(), 1.0)
            assert woken & CHANGED
        with feed.watch(JOB, known_version=5, epoch=feed.epoch) as current:
            waiting = asyncio.create_task(current.wait())
            await asyncio.sleep(0.05)
            assert not waiting.done()  # read after the catch-up: nothing to read again
            waiting.cancel()
    finally:
        await feed.close()


def _job(version: int, status: int) -> generation_pb2.Job:
    job = generation_pb2.Job(
        id=JOB,
        owner_id=OWNER,
        status=status,  # type: ignore[arg-type]
        version=version,
        settings=generation_pb2.JobSettings(mode="imagine"),
    )
    job.created_at.FromSeconds(1_790_000_000)
    job.updated_at.FromSeconds(1_790_000_000 + version)
    return job


class _Generation:
    """GetGeneration for the producers: fails the calls listed in ``failing`` (by
    order), answers ``job`` otherwise."""

    def __init__(self, job: generation_pb2.Job, failing: set[int]) -> None:
        self.job = job
        self.failing = failing
        self.calls = 0

    async def GetGeneration(self, request: object, timeout: float, metadata: object) -> object:
        self.calls += 1
        if self.calls in self.failing:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="generation briefly unreachable",
            )
        return SimpleNamespace(job=self.job)


async def test_a_watcher_whose_re_read_failed_reads_again_later() -> None:
    """Two streams on one running job (the leader, then a second tab). The feed was
    interrupted and caught up again: every watcher reads the job again (news None).
    The leader's read works and finds version 6 (processing); the second stream's read
    fails (generation busy or one replica restarting). Only the leader reads on a timer,
    and shares only what is newer than its own view: the second stream reads again at
    its next heartbeat until a read works."""
    before = _job(5, generation_pb2.JOB_STATUS_STARTING)
    after = _job(6, generation_pb2.JOB_STATUS_PROCESSING)
    generation = _Generation(after, failing={2})
    upstream = _FreshGeneration(head=4)  # a connected, caught-up, quiet feed
    feed = JobFeed(upstream, SettledJobs(10, 60.0), Timings(heartbeat=0.1, refresh=0.1))  # type: ignore[arg-type]
    feed.ensure_running()
    await asyncio.wait_for(upstream.caught_up.wait(), WAIT)
    await asyncio.sleep(0.05)
    state = SimpleNamespace(
        connected=lambda: SimpleNamespace(generation=generation),
        rpc_timeout=lambda: 5.0,
        feed=feed,
    )
    written: dict[str, list[bytes]] = {"leader": [], "second": []}

    def stream(name: str) -> tuple[Watch, asyncio.Task[None]]:
        produce = _producer(state, OWNER, JOB, before, 5, "http://edge", float("inf"))  # type: ignore[arg-type]
        cm = feed.watch(JOB, known_version=5)
        watch = cm.__enter__()

        async def write(data: bytes) -> None:
            written[name].append(data)

        async def run() -> None:
            try:
                await produce(watch, write)
            finally:
                cm.__exit__(None, None, None)

        return watch, asyncio.create_task(run())

    leader, leading = stream("leader")
    second, following = stream("second")
    await asyncio.sleep(0.01)
    # The feed resumed: every watcher reads its job again (JobFeed._wake_all).
    for watch in (leader, second):
        watch.news = None
        watch.wake(CHANGED)
    await asyncio.sleep(0.05)
    assert any(b"id: 6" in chunk for chunk in written["leader"])
    # Ten heartbeats' worth of time (0.1 s).
    await asyncio.sleep(1.0)
    try:
        assert any(b"id: 6" in chunk for chunk in written["second"]), (
            f"second stream never got version 6 after {generation.calls} reads"
        )
    finally:
        leading.cancel()
        following.cancel()
        await asyncio.gather(leading, following, return_exceptions=True)
        await feed.close()


def _job_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


class _Batched(_FreshGeneration):
    """A feed that marks its stream once and then goes quiet (a deaf LISTEN: the edge
    stops trusting it 0.24 s later), and GetJobs over ``jobs`` (or UNIMPLEMENTED, as a
    generation from before it answers)."""

    def __init__(self, jobs: dict[str, generation_pb2.Job], implemented: bool = True) -> None:
        super().__init__(head=4)
        self.jobs = jobs
        self.implemented = implemented
        self.batches: list[list[str]] = []

    async def GetJobs(
        self, request: generation_pb2.GetJobsRequest, timeout: float
    ) -> generation_pb2.GetJobsResponse:
        self.batches.append(list(request.job_ids))
        if not self.implemented:
            empty = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, empty, empty)
        found = [self.jobs[job_id] for job_id in request.job_ids if job_id in self.jobs]
        return generation_pb2.GetJobsResponse(jobs=found)


async def _deaf_feed(upstream: _Batched) -> JobFeed:
    """A feed over ``upstream``, caught up once: 0.24 s later it no longer vouches."""
    timings = Timings(heartbeat=60.0, refresh=60.0, fallback=0.2)
    feed = JobFeed(upstream, SettledJobs(10, 60.0), timings)  # type: ignore[arg-type]
    feed.ensure_running()
    await asyncio.wait_for(upstream.caught_up.wait(), WAIT)
    await asyncio.sleep(0.05)
    return feed


async def test_a_feed_that_cannot_vouch_for_itself_reads_every_watched_job_in_a_few_calls() -> None:
    """600 watched jobs while the feed is deaf: read from generation in two calls every
    fallback interval (500, then 100), not one each, so each stays within the SPEC's
    250 ms (a read each, at 200 a second, put 3 s between a job's reads). A job found
    newer wakes its watcher with the view; the others sleep."""
    changed = _job(6, generation_pb2.JOB_STATUS_PROCESSING)
    changed.id = _job_id(0)
    upstream = _Batched({changed.id: changed})
    feed = await _deaf_feed(upstream)
    try:
        with contextlib.ExitStack() as watching:
            watches = [
                watching.enter_context(feed.watch(_job_id(n), known_version=5, epoch=feed.epoch))
                for n in range(600)
            ]
            woken = await asyncio.wait_for(watches[0].wait(), 1.0)
            assert woken & CHANGED
            assert watches[0].news.version == 6
            assert [len(batch) for batch in upstream.batches[:2]] == [500, 100]
            quiet = asyncio.create_task(watches[1].wait())
            await asyncio.sleep(0.5)
            assert not quiet.done()  # found no newer: not woken
            quiet.cancel()
            assert not feed.settled.live
    finally:
        await feed.close()


async def test_from_a_generation_without_get_jobs_each_leader_reads_its_own() -> None:
    upstream = _Batched({}, implemented=False)
    feed = await _deaf_feed(upstream)
    try:
        with feed.watch(JOB, known_version=5, epoch=feed.epoch) as watch:
            reasons = 0
            async with asyncio.timeout(2.0):
                while not reasons & REFRESH:
                    reasons |= await watch.wait()
            assert len(upstream.batches) == 1  # asked once, then no more
    finally:
        await feed.close()


class _Interrupted(_Batched):
    """A feed whose first stream breaks once it has caught up (a generation restart, a
    connection retired); the next stream works. GetJobs over ``jobs``."""

    def __init__(self, jobs: dict[str, generation_pb2.Job]) -> None:
        super().__init__(jobs)
        self.streams = 0
        self.broken = asyncio.Event()
        self.break_now = asyncio.Event()

    def WatchJobs(self, request: generation_pb2.WatchJobsRequest, timeout: float) -> _Call:
        self.streams += 1
        return _Call(self._first() if self.streams == 1 else self._items())

    async def _first(self) -> AsyncIterator[object]:
        yield generation_pb2.WatchJobsResponse(caught_up=self.head)
        self.caught_up.set()
        await self.break_now.wait()
        self.broken.set()
        empty = grpc.aio.Metadata()
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, empty, empty)


async def test_an_interrupted_feed_reads_the_watched_jobs_in_one_call_not_one_each() -> None:
    """Each time the feed was away (a restart; every renewal of the stream), every watcher
    was woken to read its own job: 2000 streams, 2000 reads at once on generation. One
    GetJobs now reads them, and only the watcher of a job found newer is woken."""
    changed = _job(6, generation_pb2.JOB_STATUS_PROCESSING)
    changed.id = _job_id(0)
    upstream = _Interrupted({changed.id: changed})
    timings = Timings(heartbeat=60.0, refresh=60.0, fallback=60.0)
    feed = JobFeed(upstream, SettledJobs(10, 60.0), timings)  # type: ignore[arg-type]
    feed.ensure_running()
    await asyncio.wait_for(upstream.caught_up.wait(), WAIT)
    try:
        with contextlib.ExitStack() as watching:
            watches = [
                watching.enter_context(feed.watch(_job_id(n), known_version=5, epoch=feed.epoch))
                for n in range(50)
            ]
            quiet = [asyncio.create_task(watch.wait()) for watch in watches[1:]]
            upstream.break_now.set()
            woken = await asyncio.wait_for(watches[0].wait(), 2.0)
            assert woken & CHANGED
            assert watches[0].news.version == 6
            await asyncio.sleep(0.5)
            assert not any(task.done() for task in quiet)  # nothing newer: not woken
            assert upstream.batches
            assert all(len(batch) == 50 for batch in upstream.batches)
            for task in quiet:
                task.cancel()
    finally:
        await feed.close()


class _Resuming(_FreshGeneration):
    """A resumed stream: its replay carries J's change to 6 without a view (replayed
    changes carry none), then, when told, the first mark. GetJobs finds J at 6."""

    def __init__(self) -> None:
        super().__init__(head=6)
        self.mark_now = asyncio.Event()
        self.get_jobs = 0

    async def _items(self) -> AsyncIterator[object]:
        yield generation_pb2.WatchJobsResponse(
            change=generation_pb2.JobChange(job_id=JOB, version=6, owner_id=OWNER)
        )
        await self.mark_now.wait()
        yield generation_pb2.WatchJobsResponse(caught_up=6)
        await asyncio.Event().wait()

    async def GetJobs(
        self, request: generation_pb2.GetJobsRequest, timeout: float
    ) -> generation_pb2.GetJobsResponse:
        self.get_jobs += 1
        return generation_pb2.GetJobsResponse(jobs=[_job(6, generation_pb2.JOB_STATUS_PROCESSING)])


async def test_the_catch_up_hands_a_replayed_change_to_a_watcher_whose_own_read_failed() -> None:
    """The replayed change (no view) tells the watcher (at 5) to read J itself; that read
    fails (the replica restarting is why the stream broke). The catch-up's GetJobs finds
    J at 6, no newer than the feed's own record of the change, but that record had no
    view: the watcher gets it at once, not at its next heartbeat."""
    upstream = _Resuming()
    timings = Timings(heartbeat=60.0, refresh=60.0)
    feed = JobFeed(upstream, SettledJobs(10, 60.0), timings)  # type: ignore[arg-type]
    try:
        with feed.watch(JOB, known_version=5, epoch=feed.epoch) as watch:
            first = await asyncio.wait_for(watch.wait(), WAIT)
            assert first & CHANGED
            assert watch.news is None  # replayed: read it yourself (and that read failed)
            upstream.mark_now.set()
            woken = await asyncio.wait_for(watch.wait(), 1.0)
            assert woken & CHANGED
            assert getattr(watch.news, "version", None) == 6
            assert upstream.get_jobs >= 1
    finally:
        await feed.close()


async def test_an_unimplemented_get_jobs_is_asked_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One old replica answering UNIMPLEMENTED during a rolling deploy must not turn the
    batch reads off for the life of the process; meanwhile every watcher reads its own."""
    monkeypatch.setattr(feed_module, "_BATCH_READS_RETRY_SECONDS", 0.5)
    upstream = _Batched({}, implemented=False)
    feed = await _deaf_feed(upstream)
    try:
        with feed.watch(JOB, known_version=5, epoch=feed.epoch) as watch:
            assert await asyncio.wait_for(watch.wait(), 2.0) & CHANGED  # read your own
            upstream.implemented = True
            async with asyncio.timeout(3.0):
                while len(upstream.batches) < 2:
                    await asyncio.sleep(0.05)
    finally:
        await feed.close()
