"""The security suite: the e2e in-process real stack, and a real Envoy in front of it.

The stack fixtures are the e2e ones (imported, not copied). ``envoy`` runs the
deployed config (deploy/envoy/envoy.yaml, rewritten for local ports only) with
the in-process edge and gateway as its two upstreams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from testkit.envoy import Envoy, running_envoy
from testkit.stack import Stack
from tests.e2e.conftest import http, other_user, reset_emulator, stack, user

__all__ = ["envoy", "envoy_client", "http", "other_user", "reset_emulator", "stack", "user"]


@pytest.fixture(scope="session")
def envoy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    directory = tmp_path_factory.mktemp("security-envoy")
    with running_envoy(directory, stack.edge.port, stack.gateway.port) as proxy:
        yield proxy


@pytest.fixture
async def envoy_client(envoy: Envoy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=30) as client:
        yield client
