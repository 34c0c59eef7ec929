"""Every outgoing gRPC call carries a deadline, and the edge's deadlines reach the server.

Stand-in servicers record ``context.time_remaining()`` for each call the real edge
and the real webhook gateway make; a source scan proves that every gRPC call in
the services passes ``timeout=``.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edge_api.app import create_app as create_edge_app
from edge_api.settings import EdgeSettings
from interior.generation.v1 import generation_pb2
from interior.usage.v1 import usage_pb2
from kit.runtime_config import load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.plugin import S3Endpoint
from testkit.servers import ThreadedUvicorn
from testkit.standins import Backends, serving_backends
from tests.e2e.harness import make_token
from webhook_gateway.app import create_app as create_gateway_app
from webhook_gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
OWNER = uuid.uuid4()


@pytest.fixture
async def stand_ins() -> AsyncIterator[Backends]:
    async with serving_backends() as backends:
        yield backends


async def test_the_edge_sends_its_deadlines(stand_ins: Backends, s3_server: S3Endpoint) -> None:
    target, recorder = stand_ins.target, stand_ins
    settings = EdgeSettings.model_validate(
        dict(
            GENERATION_GRPC_TARGET=target,
            USAGE_GRPC_TARGET=target,
            GRPC_DEADLINE_SECONDS=7,
            GRPC_SUBMIT_DEADLINE_SECONDS=23,
            **s3_server.env(),
        )
    )
    app = create_edge_app(settings, load_runtime_config(REPO_RUNTIME_CONFIG))
    job_id = stand_ins.generation.add_job(str(OWNER)).id
    with ThreadedUvicorn(app, name="deadline-edge") as edge:
        async with httpx.AsyncClient(
            base_url=f"{edge.base_url}/api/v1",
            headers={"Authorization": f"Bearer {make_token(OWNER)}"},
            timeout=30,
        ) as client:
            calls = [
                client.post("/generations", json={"mode": "imagine", "prompt": "A sunny room"}),
                client.get(f"/generations/{job_id}"),
                client.patch(f"/generations/{job_id}", json={"action": "cancel"}),
                client.delete(f"/generations/{job_id}"),
                client.get("/usage"),
            ]
            for call in calls:
                response = await call
                assert response.status_code < 300, response.text
    expected = {
        "SubmitGeneration": 23.0,
        "GetGeneration": 7.0,
        "CancelGeneration": 7.0,
        "DeleteGeneration": 7.0,
        "GetQuota": 7.0,
    }
    assert set(recorder.remaining) == set(expected)
    for method, deadline in expected.items():
        remaining = recorder.remaining[method]
        assert remaining is not None, method
        # grpc-timeout travels in coarse units: allow a little rounding up.
        assert deadline - 2 < remaining <= deadline + 0.1, (method, remaining)


async def test_the_gateway_sends_its_deadline(stand_ins: Backends) -> None:
    target, recorder = stand_ins.target, stand_ins
    settings = GatewaySettings(GENERATION_GRPC_TARGET=target, GRPC_DEADLINE_SECONDS=4)
    with ThreadedUvicorn(create_gateway_app(settings), name="deadline-gateway") as gateway:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{gateway.base_url}/api/v1/webhooks/replicate",
                json={"id": "abc", "status": "processing"},
            )
    assert response.status_code == 200, response.text
    remaining = recorder.remaining["ApplyProviderEvent"]
    assert remaining is not None
    assert 2 < remaining <= 4.1


def _rpc_names() -> set[str]:
    names = {"Check", "Watch"}  # grpc health
    for module in (generation_pb2, usage_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names.update(method.name for method in service.methods)
    return names


def test_every_grpc_call_in_the_services_passes_a_timeout() -> None:
    """Source scan: a call of an RPC method (``stub.GetQuota(...)``) without ``timeout=``."""
    rpc_names = _rpc_names()
    missing: list[str] = []
    checked = 0
    sources = [
        *REPO.glob("services/*/src/**/*.py"),
        *REPO.glob("libs/kit/kit/**/*.py"),
    ]
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in rpc_names:
                continue
            checked += 1
            if not any(keyword.arg == "timeout" for keyword in node.keywords):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.func.attr}")
    assert checked >= 10, checked  # the scan did find the calls
    assert missing == []
