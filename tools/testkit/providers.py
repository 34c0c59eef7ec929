"""The generation service's real Replicate adapter, pointed at a test emulator."""

from __future__ import annotations

from generation.providers.replicate import ReplicateProvider
from testkit.emulator import EmulatorServer


def emulator_provider(
    emulator: EmulatorServer, model: str, timeout_seconds: float
) -> ReplicateProvider:
    """The adapter as in production, with retry backoffs short enough for tests."""
    return ReplicateProvider(
        emulator.base_url,
        emulator.token,
        model,
        timeout_seconds=timeout_seconds,
        max_attempts=4,
        backoff_base_seconds=0.02,
        backoff_max_seconds=0.1,
    )
