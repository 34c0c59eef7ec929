"""Fixtures: a fast emulator on a free port, an HTTP client and a webhook receiver."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from replicate_emulator import EmulatorConfig
from replicate_emulator.tls import client_tls_context
from testkit.emulator import EmulatorServer
from testkit.recorder import RecordingServer

FAST = EmulatorConfig(
    port=0,
    start_delay_seconds=0.02,
    run_delay_seconds=0.05,
    webhook_retry_base_seconds=0.05,
    webhook_max_attempts=4,
    webhook_timeout_seconds=2.0,
    fetch_timeout_seconds=5.0,
    min_cancel_after_seconds=0.1,
)


@pytest.fixture(scope="session")
def fast_config() -> EmulatorConfig:
    """Tiny delays so a prediction finishes in well under a second."""
    return FAST


@pytest.fixture(scope="session")
def shared_emulator(fast_config: EmulatorConfig) -> Iterator[EmulatorServer]:
    with EmulatorServer(fast_config) as server:
        yield server


@pytest.fixture
def emulator(shared_emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session's emulator, reset before and after each test."""
    shared_emulator.control.reset()
    yield shared_emulator
    shared_emulator.control.reset()


@pytest.fixture
def api(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """A plain HTTP client of the emulator, authenticated."""
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(
        base_url=emulator.base_url, headers=headers, timeout=10, verify=client_tls_context()
    ) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    server = RecordingServer("webhook-receiver", path="/hooks/replicate")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(predicate, timeout=5.0)``: poll until true or fail."""
    return _wait_until
