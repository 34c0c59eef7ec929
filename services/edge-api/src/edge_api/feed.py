"""One upstream change feed per edge process, shared by every watcher of a job.

The edge follows generation's ``WatchJobs`` stream (every owner's changes) and
wakes the watchers of the job each change names; a watcher then reads the job
once and sends what changed. A quiet watcher sleeps on its ``Watch`` (edge_api.sse):
no CPU, no call, no timer of its own. One ticker per process wakes every watcher
when a heartbeat is due and each job's leading watcher when its timed read is due,
so idle streams cost one timer in all. When the stream breaks, every watcher is
woken (so nothing that happened meanwhile is missed: each reads its job again) and
the stream is resumed from the last version seen, on whichever generation instance answers.
The edge asks generation to mark the stream every heartbeat (a ``caught_up`` after
every change committed before it), and generation says in its initial metadata how
long a healthy stream goes without a mark; a stream silent for longer (and for
``Timings.silence``) is treated as broken, so a connection that died without closing
or a frozen instance is given up within seconds; settled views stop being answered
from memory much sooner, when the last mark is older than their freshness bound
(edge_api.settled). (A LISTEN connection gone deaf is generation's to notice: it ends
the stream.) A generation that announces nothing sends no heartbeats (an older
version, during a rolling deploy): its stream is trusted until it ends, as before.

The feed also keeps the edge's cache of settled job views honest (edge_api.settled):
each change drops older views, and a disconnect or a resume drops them all. It runs
from the first watcher or the first GET, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from edge_api.settled import SettledJobs
from edge_api.sse import BEAT, CHANGED, REFRESH, STOPPING, Watch
from interior.generation.v1 import generation_pb2
from kit.logging import get_logger
from kit.wire import FEED_MARKS_WITHIN, FEED_STREAM_SECONDS

if TYPE_CHECKING:
    from interior.generation.v1.generation_pb2_grpc import GenerationServiceAsyncStub

log = get_logger("edge_api.feed")

_BACKOFF_FIRST = 0.2
# The upstream stream is renewed this often (resuming from the last version): bounded
# like every call, and a new stream lands on whichever generation replica is there now.
STREAM_SECONDS = FEED_STREAM_SECONDS
_BACKOFF_MAX = 5.0
# Generation answers a new stream (its initial metadata, then the replay and the first
# caught_up) within this much beyond the silence allowed between items: it may have to
# connect to its database first.
_STARTUP_SECONDS = 30.0
# The newest change of this many jobs is remembered, for a watcher that registers just
# after a change it did not read yet (see JobFeed.watch).
RECENT_CHANGES = 1024
# While the feed cannot vouch for itself, the watched jobs are read from generation
# every Timings.fallback, this many to a GetJobs call (its limit), the calls at once.
FALLBACK_BATCH = 500
_FALLBACK_READ_SECONDS = 1.0
# After a generation answered GetJobs UNIMPLEMENTED (an older release during a rolling
# deploy), the per-job reads are used this long before GetJobs is asked again.
_BATCH_READS_RETRY_SECONDS = 60.0
# From a generation without GetJobs (an older release during a rolling deploy), the
# jobs' leaders read their job instead: at most this many reads a second in all
# (Timings.fallback apart for a few jobs, further apart for many).
FALLBACK_READS_PER_SECOND = 200


@dataclass(frozen=True)
class Timings:
    """How often watched streams get a heartbeat and their job a timed read (seconds)."""

    heartbeat: float = 15.0
    refresh: float = 5.0
    # While the feed cannot vouch for what it reports (disconnected, catching up, or its
    # last mark older than the settled views' freshness: a deaf LISTEN, a burst queued
    # ahead), the watched jobs are read from generation this often instead (one GetJobs
    # for up to FALLBACK_BATCH of them): the source of truth.
    fallback: float = 0.2
    # The upstream stream is given up when nothing (not even generation's heartbeat
    # mark) arrived for this long, or for 1.5 times what generation announced as its
    # longest gap between marks, whichever is longer.
    silence: float = 8.0


class JobFeed:
    """Wakes the watchers of a job whenever generation reports a change of it."""

    def __init__(
        self,
        stub: Callable[[], GenerationServiceAsyncStub],
        settled: SettledJobs,
        timings: Timings | None = None,
    ) -> None:
        self._stub = stub
        self.settled = settled
        self.timings = timings or Timings()
        # Insertion-ordered (a dict as an ordered set): the first idle watcher makes the
        # job's timed read (``_reader_of``).
        self._watchers: defaultdict[str, dict[Watch, None]] = defaultdict(dict)
        self._version = 0
        # job id -> (version, the carried view or None) of its latest change, newest last.
        self._recent: OrderedDict[str, tuple[int, generation_pb2.Job | None]] = OrderedDict()
        # The newest version ``_recent`` has let go of: a job it does not hold may have
        # changed at or below it, unseen by a watcher that read an older version.
        self._forgotten = 0
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        # The watched jobs' read while the feed cannot vouch for itself (one at a time).
        self._fallback: asyncio.Task[None] | None = None
        # The event loop's time until which GetJobs is not asked: a generation that
        # answered it UNIMPLEMENTED (see _BATCH_READS_RETRY_SECONDS); meanwhile each job's
        # reader reads its own.
        self._no_batch_reads_until = -math.inf
        # True while the upstream stream is open and replayed what was recorded.
        self.caught_up = False
        # Set by stop_streams(): every stream ends, and one that starts later at once.
        self._stopping = False
        # How many times every watcher was told to read its job again (a catch-up, an
        # interruption): a stream that read its job under an older count, and registered
        # after, missed that wake-up.
        self.epoch = 0

    @contextlib.contextmanager
    def watch(
        self, job_id: str, known_version: int = 0, epoch: int | None = None
    ) -> Iterator[Watch]:
        """A watch woken on each change of ``job_id`` (and when the feed was interrupted),
        on each heartbeat, and for the job's timed read when it is the job's reader (one
        per job, see ``_reader_of``: a thousand idle streams of one job cost one read
        per interval).

        ``known_version``: the version the watcher read before registering. A change the
        feed reported in between would otherwise be missed until the next interruption
        (only the leader reads on a timer): it wakes the new watch at once. ``epoch``:
        :attr:`epoch` before that read; when it moved since, the watch is woken too.
        """
        signal = Watch()
        self._watchers[job_id][signal] = None
        recent = self._recent.get(job_id)
        if self._stopping:
            signal.wake(STOPPING)
        if epoch is not None and epoch != self.epoch:
            signal.wake(CHANGED)  # every watcher was told to read again since its read
        elif recent is not None and recent[0] > known_version:
            signal.news = recent[1]
            signal.wake(CHANGED)
        elif recent is None and known_version < self._forgotten:
            # Its change may be among those a burst of other jobs' pushed out: read it.
            signal.wake(CHANGED)
        self.ensure_running()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(
                self._tick(), name="edge-sse-ticker", context=contextvars.Context()
            )
        try:
            yield signal
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.pop(signal, None)
                if not watchers:
                    del self._watchers[job_id]

    def ensure_running(self) -> None:
        """Start following (once) if not running yet."""
        if self._task is None or self._task.done():
            # A fresh context: the request that happens to start the feed must not lend
            # it its log context (request id, caller) for the life of the process.
            self._task = asyncio.create_task(
                self._follow_forever(), name="edge-job-feed", context=contextvars.Context()
            )

    def share(self, job_id: str, job: generation_pb2.Job, reader: Watch | None = None) -> None:
        """``reader``'s timed read (or this edge's own write) found ``job`` newer: the
        job's other watchers get it too.

        While the feed is connected it reports the same change moments later (and a
        watcher ignores what is not newer than what it sent); while it is not, this is
        how the job's other watchers learn what the leader's read found. A watcher that
        already has newer news waiting, or a re-read due, keeps it.
        """
        for signal in self._watchers.get(job_id, ()):
            if signal is reader:
                continue
            if signal.pending(CHANGED) and (
                signal.news is None or signal.news.version >= job.version
            ):
                continue  # a re-read is due, or newer news waits: neither is replaced
            signal.news = job
            signal.wake(CHANGED)

    def stop_streams(self) -> None:
        """End every event stream, and any opened from now on: the process is stopping.

        A stream never ends by itself, and its client resumes it on any instance
        (Last-Event-ID), so a stopping edge ends them at once instead of holding them
        for the whole shutdown grace and then cutting them.
        """
        self._stopping = True
        self._wake_all(STOPPING)

    async def close(self) -> None:
        """Stop following (and ticking), then the read either of them started last."""
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._fallback is not None:
            self._fallback.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fallback

    @property
    def _batch_reads(self) -> bool:
        """Whether generation is asked GetJobs (see _BATCH_READS_RETRY_SECONDS)."""
        return asyncio.get_running_loop().time() >= self._no_batch_reads_until

    async def _tick(self) -> None:
        """Heartbeats for every watcher, timed reads for each job's leader (every
        ``fallback`` while the feed cannot vouch for itself); ends (to be started again
        by the next watcher) when nobody watches."""
        loop = asyncio.get_running_loop()
        timings = self.timings
        # A beat a little early: the contract is a comment at least every ``heartbeat``.
        heartbeat = timings.heartbeat - min(0.5, timings.heartbeat / 10)
        next_beat, next_read = loop.time() + heartbeat, loop.time() + timings.refresh
        next_fallback = loop.time()
        while self._watchers:
            wake_at = min(next_beat, next_read, max(next_fallback, loop.time() + timings.fallback))
            await asyncio.sleep(max(0.0, wake_at - loop.time()))
            now = loop.time()
            if now >= next_beat:
                next_beat = now + heartbeat
                self._wake_all(BEAT)
            due = now >= next_read
            if not due and now >= next_fallback and not self.settled.live:
                # Generation is asked instead: every watched job in one call (a few for
                # many), or, from a generation without it, by each job's leader within
                # its means (many watched jobs spread their reads out).
                if self._batch_reads:
                    next_fallback = now + timings.fallback
                    self._start_reading_watched()
                else:
                    spread = len(self._watchers) / FALLBACK_READS_PER_SECOND
                    next_fallback = now + max(timings.fallback, spread)
                    due = True
            if due:
                next_read = now + timings.refresh
                for signals in list(self._watchers.values()):
                    _reader_of(signals).wake(REFRESH)

    async def _read_watched(self, job_ids: list[str]) -> None:
        """Read the watched jobs from generation (the feed cannot vouch for what it
        reports), up to FALLBACK_BATCH to a call, the calls at once: a job found newer
        than the feed's latest word on it, or whose latest change came without its view
        (replayed: its watchers were left to read it themselves, and a read can fail), is
        handed to its watchers with the view, as a change the feed reported would be."""

        async def read(chunk: list[str]) -> generation_pb2.GetJobsResponse:
            request = generation_pb2.GetJobsRequest(job_ids=chunk)
            answer: generation_pb2.GetJobsResponse = await self._stub().GetJobs(
                request, timeout=_FALLBACK_READ_SECONDS
            )
            return answer

        chunks = [
            job_ids[start : start + FALLBACK_BATCH]
            for start in range(0, len(job_ids), FALLBACK_BATCH)
        ]
        try:
            answers = await asyncio.gather(*(read(chunk) for chunk in chunks))
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                # An older generation: each job's leader reads its own for a while, and
                # every watcher reads its job now (this read may have been the catch-up's).
                log.info("feed.batch_reads_unavailable")
                loop = asyncio.get_running_loop()
                self._no_batch_reads_until = loop.time() + _BATCH_READS_RETRY_SECONDS
                self._wake_all()
            return  # otherwise the next interval reads again (generation is what is down)
        except Exception as error:  # never fatal: the next interval tries again
            log.warning("feed.fallback_read_failed", reason=type(error).__name__)
            return
        for answer in answers:
            for job in answer.jobs:
                recent = self._recent.get(job.id)
                if (
                    recent is None
                    or job.version > recent[0]
                    or (job.version == recent[0] and recent[1] is None)
                ):
                    self._remember(job.id, job.version, job)
                    self.share(job.id, job)

    async def _follow_forever(self) -> None:
        delay = _BACKOFF_FIRST
        while True:
            worked = False
            try:
                await self._follow_once()
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and self.caught_up:
                    log.info("feed.renewed")  # its planned end (STREAM_SECONDS)
                else:
                    log.warning("feed.interrupted", grpcCode=error.code().name)
            except grpc.aio.UsageError as error:  # the channel was closed (shutdown)
                log.info("feed.stopped", reason=type(error).__name__)
                self._wake_all()
                return
            except Exception:  # a bug here must not switch the live feed off for good
                log.exception("feed.crashed")
            finally:
                # However it ended (even cancelled or crashed), nothing cached is trusted.
                worked = self.caught_up
                self.caught_up = False
                self.settled.suspend()
            if worked:  # it worked until now: retry soon
                delay = _BACKOFF_FIRST
            self._read_all_again()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _follow_once(self) -> None:
        request = generation_pb2.WatchJobsRequest(
            from_version=self._version, with_jobs=True, heartbeats=True
        )
        call = self._stub().WatchJobs(request, timeout=STREAM_SECONDS)
        try:
            startup = self.timings.silence + _STARTUP_SECONDS
            try:
                async with asyncio.timeout(startup):
                    metadata = await call.initial_metadata()
            except TimeoutError:
                log.warning("feed.silent", seconds=startup)
                return
            silence = self._silence(metadata)
            items = aiter(call)
            while True:
                # Until caught up, the replay (and generation's connection to its
                # database) may take a while; after it, a mark comes every heartbeat.
                limit = silence if silence is None or self.caught_up else silence + startup
                try:
                    async with asyncio.timeout(limit):
                        item = await anext(items)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    log.warning("feed.silent", seconds=limit)
                    return
                self._take(item, marked=silence is not None)
        finally:
            call.cancel()

    def _silence(self, metadata: grpc.aio.Metadata | None) -> float | None:
        """How long the stream may stay silent, from what generation announced (None:
        it sends no heartbeats, so silence proves nothing)."""
        announced = metadata.get(FEED_MARKS_WITHIN) if metadata is not None else None
        try:
            marks_within = float(announced) if isinstance(announced, str) else math.nan
        except ValueError:
            marks_within = math.nan
        if not math.isfinite(marks_within) or marks_within <= 0:
            log.info("feed.unmarked")
            return None
        return max(self.timings.silence, 1.5 * marks_within)

    def _take(self, item: generation_pb2.WatchJobsResponse, marked: bool) -> None:
        if item.WhichOneof("item") == "caught_up":
            self._version = max(self._version, item.caught_up)
            if not self.caught_up:  # the first mark ends the replay; later ones are beats
                self.caught_up = True
                self.settled.resume(marked)
                self._read_all_again()  # whatever happened while we were away
            self.settled.vouch(item.mark_age_ms / 1000)
            return
        change = item.change
        self._version = max(self._version, change.version)
        self.settled.changed(change.job_id, change.version)
        # The job as its owner sees it came along (with_jobs): no read needed, by the
        # watchers or by the GET that follows (a settled view is kept for it).
        news = change.job if change.HasField("job") else None
        self._remember(change.job_id, change.version, news)
        if news is not None:
            self.settled.carried(change.job_id, news, change.owner_id)
        for signal in self._watchers.get(change.job_id, ()):
            signal.news = news
            signal.wake(CHANGED)

    def _remember(self, job_id: str, version: int, news: generation_pb2.Job | None) -> None:
        self._recent[job_id] = (version, news)
        self._recent.move_to_end(job_id)
        if len(self._recent) > RECENT_CHANGES:
            _, (forgotten, _) = self._recent.popitem(last=False)
            self._forgotten = max(self._forgotten, forgotten)

    def _read_all_again(self) -> None:
        """The feed was away (interrupted, renewed, or just caught up): every watcher must
        learn what happened meanwhile. With GetJobs, one call per 500 watched jobs reads
        them and wakes only the watchers of jobs found newer, with the view (and the
        ticker reads them again every ``fallback`` until the feed vouches for itself);
        every watcher reading its own job at once was a burst of thousands of reads on
        generation at each renewal. A stream that read its job before now and registers
        after (``epoch``) reads it again itself."""
        if not self._batch_reads:
            self._wake_all()
            return
        self.epoch += 1
        self._start_reading_watched()

    def _start_reading_watched(self) -> None:
        """Read the watched jobs from generation, unless a read is under way already."""
        if self._watchers and (self._fallback is None or self._fallback.done()):
            self._fallback = asyncio.create_task(
                self._read_watched(list(self._watchers)),
                name="edge-feed-fallback",
                context=contextvars.Context(),
            )

    def _wake_all(self, reason: int = CHANGED) -> None:
        if reason & CHANGED:
            self.epoch += 1
        for signals in self._watchers.values():
            for signal in signals:
                if reason & CHANGED:
                    signal.news = None  # interrupted: what was carried may be outdated
                signal.wake(reason)


def _reader_of(signals: Iterable[Watch]) -> Watch:
    """Who makes a job's timed read: its first watcher, as long as it takes each read it
    is given (one read in flight per job: a read still under way when the next is due
    makes one more, not two at once). A first watcher that has not taken the last one
    in a whole interval is stuck (a client that stopped reading holds its stream's
    write for as long as it likes), and the job's other watchers would lose the stale
    refresh that shows a lost webhook: the read goes to the next idle watcher instead."""
    first: Watch | None = None
    for signal in signals:
        if first is None:
            first = signal
            if not signal.pending(REFRESH):
                return signal
        elif signal.idle and not signal.pending(REFRESH):
            return signal
    assert first is not None  # a job is only listed while it has watchers
    return first
