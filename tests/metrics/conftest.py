"""The metrics suites run against the real in-process system of the e2e suites.

The fixtures are the e2e ones (imported, so this directory gets its own
session stack); every service in it writes to this process's default registry,
which the edge and the gateway expose at ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from testkit.stack import Stack
from tests.e2e.conftest import http, reset_emulator, stack, user
from tests.metrics.helpers import http_scrape
from tests.metrics.test_labels_are_bounded import assert_labels_bounded

__all__ = ["http", "reset_emulator", "stack", "user"]


@pytest.fixture(scope="session", autouse=True)
async def labels_bounded_after_every_metrics_test(stack: Stack) -> AsyncIterator[None]:
    """Once every metrics test has filled the registry, whatever their order: no label
    carries an id. A failure is reported as an error at teardown and fails the run."""
    yield
    async with httpx.AsyncClient(timeout=30.0) as client:
        assert_labels_bounded(await http_scrape(client, stack.gateway.base_url), [])
