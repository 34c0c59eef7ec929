"""``ChangeFeed`` behind the domain's ``JobFeed`` port: its errors become the domain's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import cast

from generation.domain import changes
from generation.persistence import feed


class FeedPort:
    """A thin adapter: the feed's items pass through unchanged."""

    def __init__(self, change_feed: feed.ChangeFeed) -> None:
        self._feed = change_feed

    @property
    def marks_within(self) -> float:
        """See ``ChangeFeed.marks_within``."""
        return self._feed.marks_within

    async def follow(
        self, owner_id: uuid.UUID | None, from_version: int, marks: bool = False
    ) -> AsyncIterator[Sequence[changes.JobChangeRef] | changes.FeedMark]:
        """See ``ChangeFeed.follow``; closing this closes the subscription at once."""
        # follow is an async generator (typed as an iterator): closed here, its
        # subscription ends now rather than whenever the collector runs.
        followed = self._feed.follow(owner_id, from_version, marks)
        items = cast("AsyncGenerator[list[feed.JobChange] | changes.FeedMark, None]", followed)
        try:
            async with aclosing(items):
                async for item in items:
                    yield item
        except feed.FeedLost:
            raise changes.FeedLost from None
        except feed.SubscriberTooSlow:
            raise changes.SubscriberTooSlow from None
