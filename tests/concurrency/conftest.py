"""The cluster fixture: started once for the module (see cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from testkit.plugin import S3Endpoint
from tests.concurrency.cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
async def cluster(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> AsyncIterator[Cluster]:
    async with running_cluster(database_factory, s3_server) as started:
        yield started
