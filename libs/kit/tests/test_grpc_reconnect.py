"""A channel to a service that is down keeps trying to reach it every few seconds, so
the service is reached soon after it is back (gRPC's own backoff grows to 120 s, and
every call meanwhile fails at once: 503s for seconds after the service was up)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kit.grpc_client import RECONNECT_BACKOFF_MAX_MS, create_channel

WATCHED_SECONDS = 12.0
# The cap, plus gRPC's 20% jitter and the time a refused attempt takes.
LONGEST_GAP_SECONDS = RECONNECT_BACKOFF_MAX_MS / 1000 * 1.2 + 0.5


class RefusingListener:
    """A TCP port that accepts and at once closes every connection, recording when:
    a service that is not up yet, as a channel sees it."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.attempts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.attempts.append(time.monotonic())
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


async def test_a_channel_to_a_service_that_is_down_tries_it_every_few_seconds() -> None:
    listener = RefusingListener()
    channel = create_channel(f"127.0.0.1:{listener.port}", 1024 * 1024)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        began = time.monotonic()
        while time.monotonic() - began < WATCHED_SECONDS:
            # Calls as a busy edge makes them; each fails at once.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            await asyncio.sleep(0.25)
    finally:
        await channel.close()
        listener.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(listener.attempts)]
    assert len(listener.attempts) >= WATCHED_SECONDS / LONGEST_GAP_SECONDS, listener.attempts
    assert max(gaps) <= LONGEST_GAP_SECONDS, [round(gap, 2) for gap in gaps]
