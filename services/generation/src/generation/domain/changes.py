"""The change feed as the transport follows it: a port, implemented over LISTEN/NOTIFY
by ``persistence.feed.ChangeFeed``, which raises the errors defined here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol


class JobChangeRef(Protocol):
    """One visible change of a job: its new version."""

    @property
    def version(self) -> int: ...

    @property
    def job_id(self) -> uuid.UUID: ...

    @property
    def owner_id(self) -> uuid.UUID: ...


@dataclass(frozen=True)
class FeedMark:
    """Every change committed before ``taken_at`` (the event loop's clock) came before
    this mark; ``version`` is the newest version known then."""

    version: int
    taken_at: float


class FeedLost(Exception):
    """The feed's connection ended; resume from the last version received."""


class SubscriberTooSlow(Exception):
    """The follower fell behind; resume from the last version received."""


class JobFeed(Protocol):
    @property
    def marks_within(self) -> float:
        """The longest a follower of a healthy feed waits between two marks (seconds)."""
        ...

    def follow(
        self, owner_id: uuid.UUID | None, from_version: int, marks: bool = False
    ) -> AsyncGenerator[Sequence[JobChangeRef] | FeedMark, None]:
        """Changes after ``from_version``, a mark (caught up: the replay is over), then
        live changes and, with ``marks``, a mark each heartbeat. Changes come in
        batches, in version order (a live one: what had arrived when asked).

        Raises FeedLost or SubscriberTooSlow when the stream cannot go on. A generator:
        its follower closes it (``contextlib.aclosing``), so the subscription ends when
        the follower does, not whenever the collector runs.
        """
        ...
