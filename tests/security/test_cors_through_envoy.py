"""CORS is answered the same through the deployed Envoy as straight at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from kit.runtime_config import load_runtime_config
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
