"""The OpenAPI document and the health probes."""

from __future__ import annotations

import httpx
from grpc_health.v1 import health_pb2

from launcher.components import free_port

GENERATION = "interior.generation.v1.GenerationService"


async def test_openapi_document_lists_routes_and_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"]
    assert document["info"]["version"]
    paths = document["paths"]
    assert set(paths) >= {
        "/api/v1/generations",
        "/api/v1/generations/{job_id}",
        "/api/v1/usage",
        "/healthz",
        "/readyz",
        "/public/renders/{render_id}/{file_name}",
    }
    assert set(paths["/api/v1/generations/{job_id}"]) == {"get", "patch", "delete"}
    submit = paths["/api/v1/generations"]["post"]
    assert set(submit["responses"]) >= {
        "202", "400", "401", "402", "408", "409", "413", "415", "422", "429"
    }  # fmt: skip
    assert submit["responses"]["408"]["description"].startswith("REQUEST_TIMEOUT")
    assert submit["responses"]["429"]["description"].startswith("TOO_MANY_REQUESTS")
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    assert submit["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    multipart = submit["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["input1"]["format"] == "binary"
    assert multipart["properties"]["style"]["$ref"] == "#/components/schemas/Style"
    assert "japandi" in document["components"]["schemas"]["Style"]["enum"]
    assert "application/json" in submit["requestBody"]["content"]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert submit["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    # Request validation errors are 400s here, never FastAPI's 422 shape.
    assert "HTTPValidationError" not in response.text


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/docs")

    assert response.status_code == 200
    assert "openapi.json" in response.text


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_both_backends_serve(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"generation": "SERVING", "usage": "SERVING"},
    }


async def test_readyz_when_a_backend_is_not_serving(client: httpx.AsyncClient, backends) -> None:
    await backends.server.health.set(GENERATION, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        response = await client.get("/readyz")
    finally:
        await backends.server.health.set(GENERATION, health_pb2.HealthCheckResponse.SERVING)

    assert response.status_code == 503
    assert response.json()["checks"] == {"generation": "NOT_SERVING", "usage": "SERVING"}


async def test_readyz_when_a_backend_is_down(edge_clients) -> None:
    settings = edge_clients.make_settings(USAGE_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    client = await edge_clients.open(settings)

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"generation": "SERVING", "usage": "UNAVAILABLE"},
    }


async def test_the_routes_are_built_as_the_app_is_made(edge_clients, monkeypatch) -> None:
    """FastAPI builds its routes (analysing their parameters) lazily, at the first
    request, from module-level routers every app of a process shares: two apps' first
    requests in two threads analysed one parameter at once (a spurious warning, a 500
    in a test harness). They are built while the app is made, none at a request."""
    from fastapi import routing

    built: list[object] = []
    build = routing._IncludedRouter._build_effective_context

    def counting(self: routing._IncludedRouter, route: object) -> object:
        built.append(route)
        return build(self, route)  # type: ignore[arg-type]

    monkeypatch.setattr(routing._IncludedRouter, "_build_effective_context", counting)
    client = await edge_clients.open()
    made = len(built)

    assert made > 0
    await client.get("/api/v1/catalog")
    await client.get("/api/v1/generations", params={"status": "failed"})
    await client.head("/api/v1/usage")
    assert len(built) == made
