"""The change feed: committed job changes from PostgreSQL, fanned out in this process.

Triggers (migration 0002) give every visible change of a job a version from one
sequence, record it in ``job_events`` and ``NOTIFY job_events``. One listening
connection per process receives the notifications (in commit order) and hands
them to every subscriber's bounded queue; a subscriber that falls behind is ended
rather than buffered without bound. A follower resumes from ``job_events`` after
the version it saw last: versions are taken when a statement runs and
notifications arrive when transactions commit, so the replay reaches back
``REPLAY_SLACK`` versions and receivers ignore what they already saw.

When the listening connection is lost every subscription ends (its follower
resumes from the table, here or on another instance) and the next subscriber
opens a new connection. A connection can also die without closing (a NAT's idle
timeout, a failover without a reset, a frozen server): nothing arrives and every
follower would believe nothing changed. So while it is open (followed or not: a
connection that went deaf while idle must not be handed to the next follower), the
connection proves itself each ``heartbeat``: it sends itself a notification on a
channel of its own and waits for it. Notifications arrive in commit order, so once the
probe is back every change committed before it has been handed out, and each
subscriber gets a mark (the newest version notified, as the caught-up one) that a
follower can time out on: ``marks_within`` is the longest a healthy feed goes without
one. A probe not back within ``probe_timeout`` ends the connection, and with it every
subscription. A mark also says when its probe was sent (``FeedMark.taken_at``): a
follower that answers from what the feed told it (the edge's settled views) does so
only while its last mark is recent, so a feed that stalls while its connections stay
open (a frozen instance, a deaf connection) stops those answers within a fraction of
a second, long before it is given up. Marks come every ``HEARTBEAT_SECONDS`` for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generation.domain.changes import FeedLost, FeedMark, SubscriberTooSlow
from generation.persistence.models import JobEvent
from kit.db import asyncpg_connect_args, session_scope
from kit.logging import get_logger

log = get_logger("generation.feed")

CHANNEL = "job_events"
# The listening connection's name in pg_stat_activity.
APPLICATION_NAME = "generation-feed"
# How far before the resume point the replay reaches (out-of-commit-order versions).
REPLAY_SLACK = 1000
# A subscriber this far behind is ended; its follower resumes from the table.
QUEUE_LIMIT = 10_000
# The most changes handed to a follower at once: what was queued when it asked, so a
# burst is read (and its jobs looked up) in a few steps instead of one per change.
BATCH_LIMIT = 256
# Recorded changes are kept this long for followers to resume from.
RETENTION = timedelta(hours=24)
_PRUNE_EVERY_SECONDS = 3600.0
# How often the open LISTEN connection proves itself (followed or idle) and marks the
# streams that asked for it: often enough that a follower can require a mark taken
# within the last 0.24 s (the edge's FEED_FRESHNESS_SECONDS, which keeps the SPEC's
# 250 ms) with room for delays, and no more often: a mark costs an idle edge about
# 0.5 ms of CPU (gRPC's per-message machinery), 5 a second 0.25% of a core. A probe is
# one NOTIFY round trip.
HEARTBEAT_SECONDS = 0.2
# A probe is given two heartbeats, and never less than this: a busy database or event
# loop must not end every stream of the cluster at once. (Followers stop trusting a
# feed whose marks run late long before: the probe's timeout only decides when the
# connection is given up and its streams are ended, to be resumed.)
_PROBE_TIMEOUT_MIN_SECONDS = 4.0


@dataclass(frozen=True)
class JobChange:
    version: int
    job_id: uuid.UUID
    owner_id: uuid.UUID


_LOST = object()
_OVERFLOW = object()


@dataclass(eq=False)
class _Subscriber:
    owner_id: uuid.UUID | None
    # Whether it asked for a mark each heartbeat (WatchJobsRequest.heartbeats).
    marks: bool = False
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def offer(self, item: Any) -> bool:
        """Queue ``item``; False when it does not fit: the whole backlog is then dropped
        for the overflow marker, so that nothing queued after the gap (a mark above all,
        which vouches for every change before it) reaches the follower."""
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_OVERFLOW)
            return False


class ChangeFeed:
    """One LISTEN connection per process, shared by every follower."""

    def __init__(
        self,
        database_url: str,
        sessions: async_sessionmaker[AsyncSession],
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._connect_args = asyncpg_connect_args(database_url)
        self._sessions = sessions
        self._heartbeat = heartbeat
        self.probe_timeout = max(2 * heartbeat, _PROBE_TIMEOUT_MIN_SECONDS)
        self._subscribers: set[_Subscriber] = set()
        self._connection: asyncpg.Connection | None = None
        self._opening = asyncio.Lock()
        self._pruner: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        # The probe in flight (resolved when its notification is back), if any.
        self._probe: asyncio.Future[None] | None = None
        # The newest version a notification carried: what a heartbeat's mark says.
        self._notified = 0
        # Set by close(): a follower arriving later (a stopping server) is ended at once.
        self._closed = False

    @property
    def marks_within(self) -> float:
        """The longest a follower of a healthy feed waits between two marks (seconds)."""
        return self._heartbeat + self.probe_timeout

    async def follow(
        self, owner_id: uuid.UUID | None, from_version: int, marks: bool = False
    ) -> AsyncGenerator[list[JobChange] | FeedMark, None]:
        """Changes, in batches in version order, and marks for ``owner_id`` or everyone.

        The first mark, the newest version recorded, follows the replay (caught up);
        then, with ``marks``, one comes each heartbeat, after every change committed
        before it. A live batch is what had arrived when the follower asked (at least
        one change, at most ``BATCH_LIMIT``, never across a mark).

        Raises FeedLost or SubscriberTooSlow when the stream cannot go on.
        """
        if self._closed:
            raise FeedLost
        subscriber = _Subscriber(owner_id, marks)
        await self._ensure_listening()
        self._subscribers.add(subscriber)  # live first, so nothing falls between
        try:
            connection = self._connection
            if self._closed or connection is None or connection.is_closed():
                # Closed, or the connection lost as it opened (its loss ended the
                # subscribers of the moment, not this one): nothing would reach it.
                raise FeedLost
            # Whatever committed before the table is read is replayed or notified.
            taken_at = asyncio.get_running_loop().time()
            replayed, head = await self._recorded(owner_id, from_version)
            for start in range(0, len(replayed), BATCH_LIMIT):
                yield replayed[start : start + BATCH_LIMIT]
            yield FeedMark(head, taken_at)
            held: Any = None  # what ended the last batch: a mark or an end, next
            while True:
                item = held if held is not None else await subscriber.queue.get()
                held = None
                if item is _LOST:
                    raise FeedLost
                if item is _OVERFLOW:
                    raise SubscriberTooSlow
                if isinstance(item, FeedMark):
                    yield item
                    continue
                batch = [item]
                while len(batch) < BATCH_LIMIT and not subscriber.queue.empty():
                    queued = subscriber.queue.get_nowait()
                    if not isinstance(queued, JobChange):
                        held = queued  # a mark vouches for the batch: it comes after
                        break
                    batch.append(queued)
                yield batch
        finally:
            self._subscribers.discard(subscriber)

    async def close(self) -> None:
        """Stop listening and end every subscription, and any that comes later."""
        self._closed = True
        for task in (self._pruner, self._prober):
            if task is not None:
                task.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            # A dead connection's close may fail any way asyncpg likes; we are ending it.
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
        self._end_all()

    async def _ensure_listening(self) -> None:
        async with self._opening:
            if self._connection is not None and not self._connection.is_closed():
                return
            # Opened, and its tasks started, in an empty context: the WatchJobs call that
            # happens to open it must not lend its log context (request id, caller) to
            # the connection's callbacks and tasks for the life of the process.
            await asyncio.create_task(self._listen(), context=contextvars.Context())

    async def _listen(self) -> None:
        connection = await asyncpg.connect(
            **self._connect_args,
            timeout=10,
            server_settings={"application_name": APPLICATION_NAME},
        )
        connection.add_termination_listener(self._on_terminated)
        await connection.add_listener(CHANNEL, self._on_notify)
        # A channel only this connection listens on: nobody else hears its probes.
        probes = f"{CHANNEL}_probe_{uuid.uuid4().hex}"
        await connection.add_listener(probes, self._on_probe)
        self._connection = connection
        if self._pruner is None or self._pruner.done():
            self._pruner = asyncio.create_task(self._prune_forever(), name="feed-prune")
        if self._prober is not None:
            self._prober.cancel()
        self._prober = asyncio.create_task(
            self._probe_forever(connection, probes), name="feed-probe"
        )
        log.info("feed.listening")

    def _on_notify(self, _: Any, __: int, ___: str, payload: str) -> None:
        try:
            version, job_id, owner_id = payload.split(" ")
            change = JobChange(int(version), uuid.UUID(job_id), uuid.UUID(owner_id))
        except ValueError:
            log.warning("feed.bad_notification")
            return
        self._notified = max(self._notified, change.version)
        for subscriber in list(self._subscribers):
            if subscriber.owner_id in (None, change.owner_id) and not subscriber.offer(change):
                self._subscribers.discard(subscriber)

    def _on_probe(self, *_: Any) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(None)

    def _on_terminated(self, connection: Any) -> None:
        if connection is not self._connection:
            return  # an earlier connection, already replaced
        log.warning("feed.connection_lost", subscribers=len(self._subscribers))
        self._connection = None
        if self._prober is not None:
            self._prober.cancel()
        self._end_all()

    async def _probe_forever(self, connection: asyncpg.Connection, channel: str) -> None:
        """Each heartbeat: prove ``connection`` alive and mark every subscriber's stream,
        or end the connection (and every subscription) when the probe is not back within
        ``probe_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat)
            if connection.is_closed():
                return
            self._probe = probe = loop.create_future()
            sent_at = loop.time()
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await connection.execute("SELECT pg_notify($1, '')", channel)
                    await probe
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if not connection.is_closed():  # else its loss is logged already
                    log.warning("feed.probe_failed", subscribers=len(self._subscribers))
                    connection.terminate()  # its termination listener ends the subscriptions
                return
            finally:
                self._probe = None
            mark = FeedMark(self._notified, sent_at)
            for subscriber in list(self._subscribers):
                if subscriber.marks and not subscriber.offer(mark):
                    self._subscribers.discard(subscriber)

    def _end_all(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(_LOST)
        self._subscribers.clear()

    async def _recorded(
        self, owner_id: uuid.UUID | None, from_version: int
    ) -> tuple[list[JobChange], int]:
        """Recorded changes after ``from_version`` (with the slack) and the newest version."""
        async with session_scope(self._sessions) as session:
            head = await session.scalar(select(func.coalesce(func.max(JobEvent.version), 0)))
            if from_version <= 0:
                return [], int(head or 0)
            query = (
                select(JobEvent.version, JobEvent.job_id, JobEvent.owner_id)
                .where(JobEvent.version > from_version - REPLAY_SLACK)
                .order_by(JobEvent.version)
            )
            if owner_id is not None:
                query = query.where(JobEvent.owner_id == owner_id)
            rows = (await session.execute(query)).all()
        return [JobChange(row.version, row.job_id, row.owner_id) for row in rows], int(head or 0)

    async def _prune_forever(self) -> None:
        while True:
            try:
                async with session_scope(self._sessions) as session:
                    await session.execute(
                        delete(JobEvent).where(JobEvent.recorded_at < func.now() - RETENTION)
                    )
            except Exception:  # pruning is housekeeping: never fatal
                log.warning("feed.prune_failed")
            await asyncio.sleep(_PRUNE_EVERY_SECONDS)
