"""CORS is answered the same through the deployed Envoy as straight at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from kit.runtime_config import load_runtime_config
from launcher.components import free_port
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.envoy import running_envoy
from testkit.plugin import S3Endpoint
from testkit.servers import ThreadedUvicorn
from testkit.stack import Stack
from tests.e2e.harness import User

ALLOWED = "http://localhost:3000"
EVIL = "https://evil.example"


@pytest.fixture
async def entry_points(
    stack: Stack, s3_server: S3Endpoint, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    settings = EdgeSettings.model_validate(
        dict(
            GENERATION_GRPC_TARGET=f"127.0.0.1:{stack.generation.server.port}",
            USAGE_GRPC_TARGET=stack.usage_target,
            CORS_ALLOWED_ORIGINS=ALLOWED,
            **s3_server.env(),
            **stack.identity_env("edge-api"),
        )
    )
    app = create_edge_app(settings, load_runtime_config(REPO_RUNTIME_CONFIG))
    with (
        ThreadedUvicorn(app, name="cors-edge") as edge,
        running_envoy(tmp_path, edge.port, stack.gateway.port) as proxy,
    ):
        yield {"edge": edge.base_url, "envoy": proxy.url}


def _cors(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_preflights_and_answers_carry_the_same_cors_either_way(
    entry_points: dict[str, str], user: User, http: httpx.AsyncClient
) -> None:
    seen: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for name, base in entry_points.items():
        answers = [
            await http.options(
                f"{base}/api/v1/generations",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, idempotency-key",
                },
            )
            for origin in (ALLOWED, EVIL)
        ]
        answers += [
            await http.get(f"{base}/api/v1/usage", headers={**user.headers, "Origin": origin})
            for origin in (ALLOWED, EVIL)
        ]
        seen[name] = [(answer.status_code, _cors(answer)) for answer in answers]

    assert seen["envoy"] == seen["edge"]
    allowed_preflight, evil_preflight, allowed_get, evil_get = seen["envoy"]
    assert allowed_preflight[0] == 204
    assert allowed_preflight[1]["access-control-allow-origin"] == ALLOWED
    assert evil_preflight == (400, {})
    assert allowed_get[0] == 200
    assert allowed_get[1]["access-control-allow-origin"] == ALLOWED
    assert evil_get == (200, {})


async def test_envoys_own_answers_carry_cors_no_store_and_a_request_id(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """Envoy's local replies (here its 503 for a backend that is down; its 413 and 429
    alike) are read by the same pages as the edge's answers: the allowed origin gets the
    CORS headers (else a browser shows a network error, not the JSON), every origin
    gets no-store and the request id Envoy's access log names."""
    dead = free_port()
    with running_envoy(tmp_path, dead, dead, cors_origins=(ALLOWED,)) as proxy:
        allowed = await http.get(f"{proxy.url}/api/v1/usage", headers={"Origin": ALLOWED})
        evil = await http.get(f"{proxy.url}/api/v1/usage", headers={"Origin": EVIL})

    for answer in (allowed, evil):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "UPSTREAM_ERROR"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-request-id"]
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert allowed.headers["vary"] == "Origin"
    assert allowed.headers["access-control-expose-headers"] == (
        "Location,X-Request-ID,Idempotent-Replayed"
    )
    assert _cors(evil) == {}
