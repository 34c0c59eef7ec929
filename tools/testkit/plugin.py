"""Session fixtures: a real PostgreSQL and a real S3 server for the whole run.

Both start once per test session in a temporary directory and are stopped at
the end. Tests that need a database ask for ``fresh_database_url``: a new,
empty database on the shared server, so suites never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.logging import configure_logging
from launcher.components import PostgresServer, S3Server, free_port
from testkit.config import REPO_RUNTIME_CONFIG

S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key-0123456789"  # noqa: S105 - test-only credential


def pytest_configure(config: pytest.Config) -> None:
    """In-process services log as in production: JSON, redacted (never console tracebacks
    with local variables, which could print prompts).

    The harnesses run on the published dev values, so they ask for development, as
    ``make run`` does; a test of production behaviour passes ``APP_ENV=production``.
    ``RUNTIME_CONFIG_FILE`` names the repository's config, as ``make run`` does.
    """
    os.environ["APP_ENV"] = "development"
    # The services the tests start read the repository's config wherever pytest runs.
    os.environ["RUNTIME_CONFIG_FILE"] = str(REPO_RUNTIME_CONFIG)
    configure_logging("tests", "INFO")


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="interior-tests-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def postgres_server(tmp_root: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_root / "pg", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


_db_counter = itertools.count()


@pytest.fixture(scope="session")
def database_factory(postgres_server: PostgresServer) -> Callable[[str], str]:
    """Creates a new empty database and returns its asyncpg URL."""

    def create(prefix: str) -> str:
        name = f"{prefix}_{next(_db_counter)}"
        postgres_server.create_database(name)
        return postgres_server.url(name)

    return create


@pytest.fixture
def fresh_database_url(database_factory: Callable[[str], str]) -> str:
    return database_factory("t")


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str
    access_key: str
    secret_key: str
    server: S3Server

    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT": self.endpoint,
            "S3_ACCESS_KEY": self.access_key,
            "S3_SECRET_KEY": self.secret_key,
            "S3_SECURE": "false",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_root: Path) -> Iterator[S3Endpoint]:
    server = S3Server(
        tmp_root / "s3", free_port(), S3_ACCESS_KEY, S3_SECRET_KEY, log_path=tmp_root / "s3.log"
    )
    server.start()
    try:
        yield S3Endpoint(server.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, server)
    finally:
        server.stop()
