"""Routing, health and readiness."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testkit.config import REPO_RUNTIME_CONFIG

if TYPE_CHECKING:
    from conftest import GatewayFactory, GenerationDouble

PATH = "/api/v1/webhooks/replicate"


@pytest.mark.parametrize("path", ["/", "/api/v1/webhooks", f"{PATH}/", "/api/v1/generations"])
async def test_unknown_paths_get_a_json_404_and_no_redirect(
    start_gateway: GatewayFactory, path: str
) -> None:
    async with start_gateway(secret=None) as gw:
        response = await gw.client.post(path, content=b"{}")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "Not found."}}
    assert response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"


async def test_a_refused_webhook_is_never_stored(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=b"{}")
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"


async def test_healthz_answers_even_when_generation_is_down(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    await generation.stop()
    async with start_gateway() as gw:
        response = await gw.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_follows_the_generation_health_check(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    async with start_gateway() as gw:
        ready = await gw.client.get("/readyz")
        await generation.stop()
        not_ready = await gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"generation": "SERVING"}}
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "unavailable", "checks": {"generation": "NOT_SERVING"}}


async def test_the_webhook_path_comes_from_the_runtime_config(
    start_gateway: GatewayFactory, generation: GenerationDouble, tmp_path: Path
) -> None:
    text = REPO_RUNTIME_CONFIG.read_text(encoding="utf-8")
    assert f'webhook_path = "{PATH}"' in text
    config_file = tmp_path / "runtime.toml"
    config_file.write_text(
        text.replace(f'webhook_path = "{PATH}"', 'webhook_path = "/hooks/r8"'), encoding="utf-8"
    )
    async with start_gateway(secret=None, runtime_config_file=config_file) as gw:
        moved = await gw.client.post("/hooks/r8", content=b'{"id": "p1"}')
        old = await gw.client.post(PATH, content=b'{"id": "p1"}')
    assert moved.status_code == 200
    assert old.status_code == 404
    assert [e.payload for e in generation.servicer.received] == [b'{"id": "p1"}']


async def test_an_http_error_routing_never_raises_is_a_generic_500() -> None:
    """Only routing's 404 and 405 have codes of their own; any other HTTPException is
    ours and unexpected: the generic 500, never a code outside the documented ones."""
    from starlette.exceptions import HTTPException

    from webhook_gateway.responses import http_exception_handler

    response = await http_exception_handler(None, HTTPException(418))  # type: ignore[arg-type]
    assert response.status_code == 500
    assert b'"code":"INTERNAL_ERROR"' in response.body
