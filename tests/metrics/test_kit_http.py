"""The ASGI helper on a real Starlette app (in process through httpx.ASGITransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kit.metrics import install_http_metrics
from tests.metrics.helpers import Scrape, eventually, http_scrape

REQUESTS = "http_server_requests_total"
COUNT = "http_server_request_duration_seconds_count"
ITEM = "/kit-test/items/{item_id}"


async def _item(request: Request) -> Response:
    if request.path_params["item_id"] == "boom":
        raise RuntimeError("unexpected")
    return JSONResponse({"id": request.path_params["item_id"]})


class _RefuseLargeBodies:
    """Answers 413 before routing, like the edge's body cap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-too-large"):
            await Response(status_code=413)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route(ITEM, _item, methods=["GET"])])
    app.add_middleware(_RefuseLargeBodies)
    install_http_metrics(app)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        yield http


async def _scrape(client: httpx.AsyncClient) -> Scrape:
    return await http_scrape(client, "http://app")


def _count(scrape: Scrape, method: str, route: str, status: str) -> float:
    return scrape.value(REQUESTS, method=method, route=route, status=status)


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = await _scrape(client)
    assert (
        await client.get("/kit-test/items/3f1c9a7e-8a43-4c5e-9a55-2f0a5e1b7c11")
    ).status_code == 200
    assert (await client.get("/kit-test/items/other")).status_code == 200
    assert (await client.get("/kit-test/items/boom")).status_code == 500
    assert (await client.post("/kit-test/items/x")).status_code == 405
    assert (await client.get("/kit-test/items/x", headers={"x-too-large": "1"})).status_code == 413
    assert (await client.get("/kit-test/nowhere/123")).status_code == 404
    assert (await client.request("BREW", "/kit-test/items/x")).status_code == 405

    expected = [
        ("GET", ITEM, "200", 2),
        ("GET", ITEM, "500", 1),
        ("POST", ITEM, "405", 1),
        ("GET", ITEM, "413", 1),
        ("GET", "unmatched", "404", 1),
        ("OTHER", ITEM, "405", 1),
    ]

    def moved(now: Scrape) -> bool:
        return all(_count(now, m, r, s) - _count(before, m, r, s) == n for m, r, s, n in expected)

    after = await eventually(lambda: _scrape(client), moved)
    for method, route, status, times in expected:
        delta = _count(after, method, route, status) - _count(before, method, route, status)
        assert delta == times, (method, route, status)
    timed = after.value(COUNT, method="GET", route=ITEM) - before.value(
        COUNT, method="GET", route=ITEM
    )
    assert timed == 4
    routes = {s.labels["route"] for s in after.all_samples() if s.name == REQUESTS}
    assert not {route for route in routes if route.startswith("/kit-test/") and route != ITEM}


async def test_metrics_route_serves_text_and_counts_itself(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = await eventually(
        lambda: _scrape(client),
        lambda now: _count(now, "GET", "/metrics", "200") >= 2,
    )
    assert _count(after, "GET", "/metrics", "200") >= 2
    assert (await client.post("/metrics")).status_code == 405


async def test_openmetrics_is_served_when_asked_for(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
