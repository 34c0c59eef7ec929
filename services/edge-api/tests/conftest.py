"""Fixtures of the edge suite: real gRPC backends on port 0, the edge app, tokens.

The two backends are the testkit's stand-ins for the generation and usage
services (testkit.standins), behind kit's real GrpcServer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from edge_api.app import create_app
from edge_api.clients import Clients, open_clients
from edge_api.settings import EdgeSettings
from kit.runtime_config import RuntimeConfig, Uploads, load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.standins import DEFAULT_OWNER, Backends, serving_backends

SECRET = "edge-test-secret-0123456789abcdef-0123456789"
OWNER = DEFAULT_OWNER
OTHER_OWNER = "0e5f2a1c-3d4b-4c6e-8f7a-9b0c1d2e3f4a"
# Small uploads keep the size tests fast.
MAX_UPLOAD_BYTES = 64 * 1024
PERIOD_END = "2026-12-01T00:00:00.000Z"


def make_token(
    sub: object = OWNER,
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    lifetime: timedelta = timedelta(minutes=5),
    **claims: Any,
) -> str:
    """A user token; keyword claims override (None removes) the defaults."""
    now = datetime.now(UTC)
    payload: dict[str, Any] = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + lifetime,
    }
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def auth(token: str | None = None) -> dict[str, str]:
    """The Authorization header for ``token`` (a fresh valid one by default)."""
    return {"Authorization": f"Bearer {token or make_token()}"}


@pytest.fixture(scope="session")
async def backends() -> AsyncIterator[Backends]:
    async with serving_backends(max_message_bytes=24 * 1024 * 1024) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh_backends(request: pytest.FixtureRequest) -> None:
    """Every test starts with empty backends that do not fail."""
    if "backends" in request.fixturenames:
        backends: Backends = request.getfixturevalue("backends")
        backends.reset()


@pytest.fixture(scope="session")
def runtime_config() -> RuntimeConfig:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    return config.model_copy(update={"uploads": Uploads(max_bytes=MAX_UPLOAD_BYTES)})


SettingsFactory = Callable[..., EdgeSettings]


@pytest.fixture
def make_settings(backends: Backends) -> SettingsFactory:
    """Settings pointing at the test backends; keyword arguments override by alias."""

    def build(**overrides: Any) -> EdgeSettings:
        values: dict[str, Any] = {
            "AUTH_JWT_SECRET": SECRET,
            "GENERATION_GRPC_TARGET": backends.target,
            "USAGE_GRPC_TARGET": backends.target,
            # Storage is only contacted by the public-file tests, which bring a real one.
            "S3_ENDPOINT": "127.0.0.1:9",
            "S3_ACCESS_KEY": "unused",
            "S3_SECRET_KEY": "unused-secret",
            "S3_PUBLIC_BASE_URL": None,
            "GRPC_DEADLINE_SECONDS": 5,
        }
        values.update(overrides)
        return EdgeSettings.model_validate(values)

    return build


@dataclass
class EdgeClients:
    """Opens in-process clients to edge apps and closes them all at the end."""

    runtime_config: RuntimeConfig
    make_settings: SettingsFactory
    opened: list[tuple[httpx.AsyncClient, Clients]] = field(default_factory=list)

    async def open(
        self,
        settings: EdgeSettings | None = None,
        prepare: Callable[[FastAPI], None] | None = None,
    ) -> httpx.AsyncClient:
        """A client of a new app; ``prepare`` may add test-only routes first."""
        settings = settings or self.make_settings()
        clients = open_clients(settings)
        app = create_app(settings, self.runtime_config, clients)
        if prepare is not None:
            prepare(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://edge.test"
        )
        self.opened.append((client, clients))
        return client

    async def close(self) -> None:
        for client, clients in self.opened:
            await client.aclose()
            await clients.close()


@pytest.fixture
async def edge_clients(
    runtime_config: RuntimeConfig, make_settings: SettingsFactory
) -> AsyncIterator[EdgeClients]:
    opened = EdgeClients(runtime_config, make_settings)
    yield opened
    await opened.close()


@pytest.fixture
async def client(edge_clients: EdgeClients) -> httpx.AsyncClient:
    """An in-process client of an edge wired to the test backends."""
    return await edge_clients.open()


@dataclass(frozen=True)
class Identity:
    """Who the tests act as, and how they make tokens."""

    owner: str = OWNER
    other_owner: str = OTHER_OWNER
    secret: str = SECRET

    @staticmethod
    def token(sub: object = OWNER, **options: Any) -> str:
        return make_token(sub, **options)

    @staticmethod
    def headers(token: str | None = None) -> dict[str, str]:
        return auth(token)


@pytest.fixture(scope="session")
def identity() -> Identity:
    return Identity()
