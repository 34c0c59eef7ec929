"""A lean Server-Sent Events response: one task per stream, woken only when needed.

Starlette's ``StreamingResponse`` gives every stream an async generator, a task group
with a second task and, here, a timer per wait: at thousands of idle streams that is
memory and wake-ups for nothing. This response writes from the request's own task,
which sleeps on one future (``Watch``) until the edge's feed has news, the feed's
shared ticker says a heartbeat or a timed read is due, or the client went away (one
small task waits on ``receive`` for that: uvicorn's ``send`` ignores a closed peer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

# Why a watcher was woken (bit flags: several may be pending at once).
CHANGED = 1  # its job changed, or the feed was interrupted: read it again
BEAT = 2  # a heartbeat is due
REFRESH = 4  # the job's timed read is due (only one watcher of the job gets it)
GONE = 8  # the client disconnected
STOPPING = 16  # the edge is stopping: end the stream (its client resumes it elsewhere)

Write = Callable[[bytes], Awaitable[None]]


class Watch:
    """What one stream waits on: reasons accumulate until the stream takes them."""

    __slots__ = ("_reasons", "_waiter", "news")

    def __init__(self) -> None:
        self._reasons = 0
        self._waiter: asyncio.Future[None] | None = None
        # What the waker brought along (the feed: the job's newest view), if anything.
        self.news: Any = None

    def wake(self, reason: int) -> None:
        """Record ``reason`` and wake the stream if it sleeps."""
        self._reasons |= reason
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def idle(self) -> bool:
        """Whether the stream sleeps in :meth:`wait` (or was just woken from it), not
        busy writing to its client."""
        return self._waiter is not None

    def pending(self, reason: int) -> bool:
        """Whether ``reason`` is recorded and not yet taken by the stream."""
        return bool(self._reasons & reason)

    async def wait(self) -> int:
        """The reasons recorded since the last call, sleeping until there is one."""
        if not self._reasons:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        reasons, self._reasons = self._reasons, 0
        return reasons


class EventStreamResponse(Response):
    """``text/event-stream`` written by ``produce(watch, write)`` until it returns.

    ``watching()`` registers the stream's ``Watch`` for as long as the stream lasts.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        watching: Callable[[], AbstractContextManager[Watch]],
        produce: Callable[[Watch, Write], Awaitable[None]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._watching = watching
        self._produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then whatever ``produce`` writes, then the end."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        with self._watching() as watch:
            listener = asyncio.ensure_future(_until_disconnect(receive))
            listener.add_done_callback(lambda _: watch.wake(GONE))
            try:
                await self._produce(watch, write)
            finally:
                listener.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
