"""A real HTTP server that records every request: a webhook receiver, an upstream
behind Envoy. Served like every other test app (:class:`testkit.servers.ThreadedUvicorn`).

with RecordingServer("webhooks", path="/hooks/replicate") as receiver:
    ... create a prediction with webhook=receiver.url ...
    deliveries = receiver.wait_for(2)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testkit.servers import ThreadedUvicorn

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Received:
    """One request the server got."""

    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


class RecordingServer:
    """Records each request; answers the scripted ``statuses`` in order, then 200.

    A 3xx answer names ``/redirected`` as its Location; a 2xx carries ``body`` as JSON.
    """

    def __init__(self, name: str = "recorder", body: Any = None, path: str = "/") -> None:
        self.name = name
        self._path = path
        self.statuses: list[int] = []
        self._body = body
        self._received: list[Received] = []
        self._changed = threading.Condition()
        app = Starlette(routes=[Route("/{rest:path}", self._record, methods=METHODS)])
        self._server = ThreadedUvicorn(app, name=name)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Where to send requests (the path given, e.g. a webhook's)."""
        return f"{self._server.base_url}{self._path}"

    async def _record(self, request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        received = Received(
            request.method, request.url.path + query, dict(request.headers), await request.body()
        )
        with self._changed:
            self._received.append(received)
            status = self.statuses.pop(0) if self.statuses else 200
            self._changed.notify_all()
        return self._answer(status)

    def _answer(self, status: int) -> Response:
        # One connection a request, as the http.server this replaced did: a proxy in front
        # never reuses a connection uvicorn's keep-alive timer is closing (and retries).
        headers = {"Connection": "close"}
        if 300 <= status < 400:
            return Response(status_code=status, headers={**headers, "Location": "/redirected"})
        if self._body is None or status >= 300:
            return Response(status_code=status, headers=headers)
        body = json.dumps(self._body)
        return Response(body, status, headers=headers, media_type="application/json")

    def snapshot(self) -> list[Received]:
        """Everything received so far."""
        with self._changed:
            return list(self._received)

    def clear(self) -> None:
        """Forget what was received so far."""
        with self._changed:
            self._received.clear()

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request that reached it, in order."""
        return [(request.method, request.path) for request in self.snapshot()]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least ``count`` requests arrived; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self._received)}")
            return list(self._received)

    def start(self) -> RecordingServer:
        """Serve in a background thread."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
