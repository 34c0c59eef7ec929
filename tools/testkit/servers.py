"""Real HTTP servers for tests: the one way to serve an ASGI app on a real port.

:class:`ThreadedUvicorn` runs the app in a background thread (its own event
loop: for synchronous callers and apps that must not share the test's loop);
:func:`serve_in_loop` runs it as a task in the caller's loop. Both bind
127.0.0.1 (a free port unless one is given) and return only once uvicorn has
started, giving up at a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import uvicorn

START_TIMEOUT = 15.0


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


class _Server(uvicorn.Server):
    """uvicorn that calls ``settled`` once its startup is over (done or failed), without
    touching signals (the test runner owns them; a thread may not install handlers)."""

    def __init__(self, config: uvicorn.Config, settled: Callable[[], object]) -> None:
        super().__init__(config)
        self._settled = settled

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's answer to a failed lifespan: the caller raises
            self.should_exit = True
        finally:
            self._settled()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ThreadedUvicorn:
    """Serves ``app`` on 127.0.0.1 (a free port unless one is given) in its own thread.

    The app's lifespan runs in that thread's event loop, so anything it creates
    there (gRPC channels, HTTP pools) lives and dies with the server.
    """

    def __init__(
        self,
        app: Any = None,
        port: int = 0,
        name: str = "uvicorn",
        host: str = "127.0.0.1",
        *,
        factory: Callable[[int], Any] | None = None,
    ) -> None:
        # ``factory`` builds the app once the port is known (an app that names its own URL).
        self._factory = factory or (lambda _port: app)
        self._app = app
        self._host = host
        self._requested_port = port
        self._name = name
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> ThreadedUvicorn:
        """Serve in a thread; return once uvicorn accepts connections (or raise)."""
        sock = _bind(self._host, self._requested_port)
        self.port = sock.getsockname()[1]
        settled = threading.Event()
        self._app = self._factory(self.port)
        server = self._server = _Server(_config(self._app), settled.set)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self._name, daemon=True
        )
        self._thread.start()
        if not settled.wait(timeout) or not server.started:
            self.stop()
            sock.close()
            raise RuntimeError(f"{self._name} did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit (the app's lifespan ends) and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ThreadedUvicorn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` as a task of the running loop on a free port; yields its base URL."""
    sock = _bind("127.0.0.1", 0)
    settled = asyncio.Event()
    server = _Server(_config(app), settled.set)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await settled.wait()
        if not server.started:
            raise RuntimeError("the app did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class MovableClock:
    """Real time plus an offset that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
