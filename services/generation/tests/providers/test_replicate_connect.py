"""A connection that is never made, over a real socket: a create may retry it.

The mock transport of the other adapter tests raises ``httpx.ConnectTimeout`` itself;
here the kernel leaves the connect hanging (the listener's accept queue is full, so
its SYNs are dropped), as a provider that stopped accepting connections would.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from generation.domain.provider import PredictionRequest, ProviderUnavailable
from generation.providers.replicate import ReplicateProvider, attempt_timeout

REQUEST = PredictionRequest("a room", (), "https://hooks.test/w", ("completed",))


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A listening port whose accept queue is full: a new connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    probe = socket.create_connection  # the premise, checked: a connect does hang
    with pytest.raises(TimeoutError):
        probe(("127.0.0.1", port), timeout=0.3).close()
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _provider(port: int, sleeps: list[float]) -> ReplicateProvider:
    async def recorded(seconds: float) -> None:
        sleeps.append(seconds)

    return ReplicateProvider(
        f"http://127.0.0.1:{port}",
        "r8_token",
        "google/nano-banana",
        timeout_seconds=0.5,
        max_attempts=3,
        sleep=recorded,
    )


async def test_a_create_whose_connection_is_never_made_is_retried(unanswered_port: int) -> None:
    sleeps: list[float] = []
    provider = _provider(unanswered_port, sleeps)
    try:
        with pytest.raises(ProviderUnavailable, match="ConnectTimeout"):
            await provider.create_prediction(REQUEST)
    finally:
        await provider.aclose()
    assert len(sleeps) == 2  # three attempts: nothing was sent, nothing was started


async def test_a_get_whose_connection_is_never_made_is_retried(unanswered_port: int) -> None:
    sleeps: list[float] = []
    provider = _provider(unanswered_port, sleeps)
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.get_prediction("ufawqhfynnddngldkgtslldrkq")
    finally:
        await provider.aclose()
    assert len(sleeps) == 2


@pytest.mark.parametrize("seconds", [0.2, 1.0, 5.9, 30.0])
def test_connecting_gets_less_than_the_whole_attempt(seconds: float) -> None:
    timeout = attempt_timeout(seconds)
    assert timeout.connect is not None
    assert timeout.pool is not None
    assert 0 < timeout.connect < seconds
    assert 0 < timeout.pool < seconds
    assert timeout.read == timeout.write == seconds
