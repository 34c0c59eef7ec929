"""The change feed as the transport follows it: a port, implemented over LISTEN/NOTIFY.

``persistence.feed_port`` adapts ``persistence.feed.ChangeFeed`` to it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Protocol


class JobChangeRef(Protocol):
    """One visible change of a job: its new version."""

    @property
    def version(self) -> int: ...

    @property
    def job_id(self) -> uuid.UUID: ...

    @property
    def owner_id(self) -> uuid.UUID: ...


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
    ) -> AsyncIterator[JobChangeRef | int]:
        """Changes after ``from_version``, an ``int`` mark (the caught-up version), then live
        changes and, with ``marks``, a mark each heartbeat (every change committed before
        it came first).

        Raises FeedLost or SubscriberTooSlow when the stream cannot go on.
        """
        ...
