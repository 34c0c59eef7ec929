"""Views of settled jobs this edge served, answered from memory while the feed is live.

A succeeded / failed / canceled job rarely changes again (a deletion of its render
does), so GET answers it from a bounded LRU instead of calling generation. That is
safe only while the change feed is connected and caught up: every change it reports
drops an older view, and when it disconnects or resumes everything is dropped (what
happened meanwhile is unknown). A read that raced a change is not kept: each read
registers a ticket, a change of that job seen meanwhile marks the ticket, and a view
older than a change seen is discarded. The protobuf Job is kept (not its JSON): the
variant URLs are built per request. Its signed input URLs expire, so a view is
served for at most ``max_age`` seconds. Views come from two places: a GET's own read,
and the job the feed carries with each change (``carried``), so the first GET after a
job settles is usually answered here too.

Connected is not enough: a stream can stall while it stays open (a frozen generation
instance, a LISTEN connection gone deaf), and until that is noticed and the stream
given up (seconds), every change would be missed. So a marked feed (generation marks
it every heartbeat, 0.2 s, saying when the mark was taken) vouches only for so long:
views are answered from memory while the last mark was taken within ``freshness``
(0.24 s, inside the SPEC's 250 ms), and asked of generation otherwise; the next mark
lets them be answered again, as the changes before it came first. Another edge's
change is then never hidden for longer than that plus the mark's own travel.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from interior.generation.v1 import generation_pb2

# A job's terminal statuses: the only ones kept here, and the end of an SSE stream.
SETTLED = frozenset(
    {
        generation_pb2.JOB_STATUS_SUCCEEDED,
        generation_pb2.JOB_STATUS_FAILED,
        generation_pb2.JOB_STATUS_CANCELED,
    }
)
# Newer than any version: what forget() reports.
_UNKNOWN = 2**63
# How many jobs' floors (see SettledJobs.answered) are remembered; a DELETE is rare.
FLOORS = 10_000


@dataclass
class _Entry:
    job: generation_pb2.Job
    owner_id: str
    stored_at: float


@dataclass(eq=False)
class Read:
    """One read of a job from generation whose answer may be kept."""

    job_id: str
    epoch: int
    # The newest change of this job reported while the read was in flight.
    newest_change: int = field(default=0)


class SettledJobs:
    """A bounded LRU of settled job views, keyed by job id, with their owner."""

    def __init__(
        self,
        capacity: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
        freshness: float = 0.24,
    ) -> None:
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        self._freshness = freshness
        # When the feed's last mark was taken (``clock``), for a feed that marks its
        # stream; None for one that does not (trusted while connected).
        self._vouched_at: float | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._reads: dict[str, set[Read]] = {}
        # The oldest version this edge may still answer, per job, for jobs whose change
        # this edge answered itself (a DELETE) before the feed reported it: the view
        # stored with it can be evicted, and the feed may still carry an older one.
        self._floors: OrderedDict[str, int] = OrderedDict()
        # Jobs whose state is unknown since a write that failed (it may have been done
        # all the same), and until when (``clock``) no view of them is kept.
        self._pins: OrderedDict[str, float] = OrderedDict()
        # Bumped on every suspend / resume: reads begun before are not kept.
        self._epoch = 0
        # True only while the feed is connected and caught up.
        self._live = False
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def live(self) -> bool:
        """Whether views are answered: the feed is connected and caught up, and its last
        mark (if it marks its stream) was taken within ``freshness``."""
        if not self._live:
            return False
        vouched_at = self._vouched_at
        return vouched_at is None or self._clock() - vouched_at <= self._freshness

    def lookup(self, job_id: str, owner_id: str) -> generation_pb2.Job | None:
        """The kept view of the owner's job, or None (ask generation)."""
        entry = self._entries.get(job_id)
        if entry is None or entry.owner_id != owner_id or not self.live:
            return None
        if self._clock() - entry.stored_at > self._max_age:
            del self._entries[job_id]
            return None
        self._entries.move_to_end(job_id)
        self.hits += 1
        return entry.job

    @contextlib.contextmanager
    def reading(self, job_id: str) -> Iterator[Read]:
        """Register a read of ``job_id`` for as long as it is in flight."""
        read = Read(job_id, self._epoch)
        self._reads.setdefault(job_id, set()).add(read)
        try:
            yield read
        finally:
            reads = self._reads.get(job_id)
            if reads is not None:
                reads.discard(read)
                if not reads:
                    del self._reads[job_id]

    def keep(self, read: Read, job: generation_pb2.Job, owner_id: str) -> None:
        """Keep ``job`` (the answer of ``read``) if it is settled and nothing newer was seen."""
        if self._capacity <= 0 or not self._live or read.epoch != self._epoch:
            return
        if job.status not in SETTLED or job.version < read.newest_change:
            self._entries.pop(read.job_id, None)
            return
        if job.version < self._floors.get(read.job_id, 0) or self._pinned(read.job_id):
            return
        current = self._entries.get(read.job_id)
        if current is not None and current.job.version > job.version:
            return
        self._store(read.job_id, job, owner_id)

    def _store(self, job_id: str, job: generation_pb2.Job, owner_id: str) -> None:
        self._entries[job_id] = _Entry(job, owner_id, self._clock())
        self._entries.move_to_end(job_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def carried(self, job_id: str, job: generation_pb2.Job, owner_id: str) -> None:
        """Keep ``job``, the view the feed carried with a change of it, if it is settled.

        Generation read it after the change was committed, as GetGeneration answers its
        owner, and the feed reports its changes in order: any later change comes after
        it and drops it. So the GET that follows a webhook is answered here once the
        feed has passed the change on, without a call of its own.
        """
        if self._capacity <= 0 or not self._live or job.status not in SETTLED:
            return
        if job.version < self._floors.get(job_id, 0) or self._pinned(job_id):
            return  # older than a change this edge answered (a DELETE): never again
        current = self._entries.get(job_id)
        if current is not None and current.job.version >= job.version:
            return
        self._store(job_id, job, owner_id)

    def changed(self, job_id: str, version: int) -> None:
        """A change of ``job_id`` at ``version``: drop older views, mark reads in flight.

        Once the feed reports a change at or past a job's floor, the floor has done its
        work: the feed reports in order, so what it carries later is newer still.
        """
        entry = self._entries.get(job_id)
        if entry is not None and entry.job.version < version:
            del self._entries[job_id]
        for read in self._reads.get(job_id, ()):
            read.newest_change = max(read.newest_change, version)
        floor = self._floors.get(job_id)
        if floor is not None and floor <= version:
            del self._floors[job_id]

    def answered(self, job_id: str, version: int) -> None:
        """This edge answered a change of ``job_id`` at ``version`` (a DELETE's reply):
        drop older views, and never keep a view older than it again, whether read or
        carried by the feed, until the feed itself reports that change."""
        self.changed(job_id, version)
        self._raise_floor(job_id, version)

    def forget(self, job_id: str, for_seconds: float) -> None:
        """Drop ``job_id``'s view and every read of it in flight (its state is unknown),
        and keep none for ``for_seconds`` (its GETs go to generation): this follows a
        DELETE call that failed, which may have been done all the same, at the latest
        by the call's deadline. Once that has passed, what generation answers and what
        the feed reports (in order) is the truth again; pinned for ever, one failed
        call sent the job's every GET to generation for the life of the process."""
        self.changed(job_id, _UNKNOWN)
        self._pins[job_id] = max(self._clock() + for_seconds, self._pins.get(job_id, 0.0))
        self._pins.move_to_end(job_id)
        while len(self._pins) > FLOORS:
            self._pins.popitem(last=False)

    def _pinned(self, job_id: str) -> bool:
        until = self._pins.get(job_id)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._pins[job_id]
        return False

    def _raise_floor(self, job_id: str, version: int) -> None:
        self._floors[job_id] = max(version, self._floors.get(job_id, 0))
        self._floors.move_to_end(job_id)
        while len(self._floors) > FLOORS:
            self._floors.popitem(last=False)

    def suspend(self) -> None:
        """The feed disconnected: forget everything, answer nothing."""
        self._live = False
        self._forget()

    def resume(self, marked: bool = False) -> None:
        """The feed caught up again: start over from an empty cache. ``marked``: the feed
        marks its stream, and views are answered only while a mark is recent (vouch)."""
        self._forget()
        self._vouched_at = -math.inf if marked else None
        self._live = True

    def vouch(self, age: float) -> None:
        """A mark of a marked feed, taken ``age`` seconds ago: every change committed
        before then has been reported."""
        if self._vouched_at is not None:
            self._vouched_at = max(self._vouched_at, self._clock() - age)

    def _forget(self) -> None:
        self._entries.clear()
        self._epoch += 1
