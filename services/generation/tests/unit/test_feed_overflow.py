"""A follower that falls behind loses its whole backlog, not just its oldest item.

Marks vouch for every change committed before them: a mark queued after a dropped
change would tell the edge it missed nothing, and its settled views would be answered
from memory with the dropped change unseen until the backlog drained.
"""

from __future__ import annotations

import uuid

import pytest

from generation.domain.changes import FeedMark
from generation.persistence import feed


def _change(version: int) -> feed.JobChange:
    return feed.JobChange(version, uuid.uuid4(), uuid.uuid4())


def test_an_overflow_drops_everything_queued_for_the_marker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed, "QUEUE_LIMIT", 3)
    subscriber = feed._Subscriber(None, marks=True)
    assert subscriber.offer(_change(1))
    assert subscriber.offer(FeedMark(1, 0.0))
    assert subscriber.offer(_change(2))

    assert not subscriber.offer(FeedMark(2, 0.1))

    assert subscriber.queue.qsize() == 1
    assert subscriber.queue.get_nowait() is feed._OVERFLOW
