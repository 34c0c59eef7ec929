"""Error mapping: gRPC statuses, routing errors and surprises all become our JSON body."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

from kit.errors import (
    ALL_ERRORS,
    DomainError,
    IdempotencyKeyReused,
    InternalError,
    JobNotCancellable,
    JobNotFinished,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyInflight,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    ValidationError,
)
from launcher.components import free_port

PERIOD_END = "2026-12-01T00:00:00.000Z"
# The answers clients get (SPEC.md's error table and the OpenAPI), written out here
# rather than read from the edge's table, so a change to that table shows.
DOCUMENTED_STATUS: dict[type[DomainError], int] = {
    ValidationError: 400,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RequestTimeout: 408,
    TooManyRequests: 429,
    Unauthorized: 401,
    NotFound: 404,
    TooManyInflight: 409,
    JobNotCancellable: 409,
    JobNotFinished: 409,
    IdempotencyKeyReused: 422,
    LimitExceeded: 402,
    UpstreamError: 502,
    ServiceUnavailable: 503,
    InternalError: 500,
}


class _NewerReason(DomainError):
    """An error of a newer service version, which this edge does not know."""

    code = "SOMETHING_NEW"
    reason = "SOMETHING_NEW"
    default_message = "Internal text of a newer service."


@pytest.mark.parametrize("error_type", ALL_ERRORS, ids=lambda t: t.__name__)
async def test_each_normalized_code_keeps_its_status_and_body(
    client: httpx.AsyncClient, backends, identity, error_type: type[DomainError]
) -> None:
    backends.generation.recorder.fail_with = error_type()

    response = await client.get(f"/api/v1/generations/{uuid.uuid4()}", headers=identity.headers())

    assert response.status_code == DOCUMENTED_STATUS[error_type]
    assert response.json() == {
        "error": {"code": error_type.code, "message": error_type.default_message}
    }
    assert response.headers["X-Request-ID"]


def test_every_error_type_has_a_documented_status() -> None:
    assert set(DOCUMENTED_STATUS) == set(ALL_ERRORS)


async def test_an_unknown_reason_is_a_generic_500(
    client: httpx.AsyncClient, backends, identity
) -> None:
    backends.generation.recorder.fail_with = _NewerReason()

    response = await client.get(f"/api/v1/generations/{uuid.uuid4()}", headers=identity.headers())

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL_ERROR", "message": InternalError.default_message}
    }


async def test_limit_exceeded_carries_period_end(
    client: httpx.AsyncClient, backends, identity
) -> None:
    backends.generation.recorder.fail_with = LimitExceeded(periodEnd=PERIOD_END)

    response = await client.post(
        "/api/v1/generations", headers=identity.headers(), json={"mode": "imagine"}
    )

    assert response.status_code == 402
    assert response.json() == {
        "error": {
            "code": "LIMIT_EXCEEDED",
            "message": LimitExceeded.default_message,
            "periodEnd": PERIOD_END,
        }
    }


async def test_upstream_details_cannot_override_or_smuggle_keys(
    client: httpx.AsyncClient, backends, identity
) -> None:
    backends.generation.recorder.fail_with = LimitExceeded(
        **{"code": "OTHER", "Weird-Key": "x", "long": "y" * 500, "resetsIn": "3d"}
    )

    response = await client.get(f"/api/v1/generations/{uuid.uuid4()}", headers=identity.headers())

    assert response.json()["error"] == {
        "code": "LIMIT_EXCEEDED",
        "message": LimitExceeded.default_message,
        "resetsIn": "3d",
    }


async def test_unexpected_backend_failure_is_a_generic_500(
    client: httpx.AsyncClient, backends, identity
) -> None:
    backends.generation.recorder.fail_with = RuntimeError("db password is hunter2")

    response = await client.get(f"/api/v1/generations/{uuid.uuid4()}", headers=identity.headers())

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL_ERROR", "message": "Something went wrong. Please try again."}
    }
    assert "hunter2" not in response.text


async def test_generation_service_down_is_503_json_without_trace(edge_clients, identity) -> None:
    dead = f"127.0.0.1:{free_port()}"
    client = await edge_clients.open(
        edge_clients.make_settings(GENERATION_GRPC_TARGET=dead, USAGE_GRPC_TARGET=dead)
    )

    for method, path, body in [
        ("POST", "/api/v1/generations", {"mode": "imagine"}),
        ("GET", f"/api/v1/generations/{uuid.uuid4()}", None),
        ("GET", "/api/v1/usage", None),
    ]:
        response = await client.request(method, path, headers=identity.headers(), json=body)
        assert response.status_code == 503, path
        assert response.json() == {
            "error": {
                "code": "UPSTREAM_ERROR",
                # Fixed text: gRPC's own ("failed to connect ... ipv4:host:port") never
                # reaches a client.
                "message": "A backend service is unavailable. Please try again.",
            }
        }
        assert dead not in response.text
        assert "Traceback" not in response.text


async def test_a_slow_backend_hits_the_deadline(edge_clients, backends, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(GRPC_DEADLINE_SECONDS=0.2))
    backends.usage.recorder.delay_seconds = 1.0

    response = await client.get("/api/v1/usage", headers=identity.headers())

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"


async def test_unexpected_edge_exception_is_a_generic_500(edge_clients) -> None:
    def add_broken_route(app: FastAPI) -> None:
        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("internal detail")

    client = await edge_clients.open(prepare=add_broken_route)

    response = await client.get("/boom", headers={"X-Request-ID": "trace-me"})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"
    assert "internal detail" not in response.text
    assert len(response.headers["X-Request-ID"]) == 32  # ours, never the caller's


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1", "/api/v1/generations/", "/api/v2/usage", "/public/"]
)
async def test_unknown_routes_are_json_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "Not found."}}
    assert response.headers["X-Request-ID"]


async def test_wrong_method_is_json_405(client: httpx.AsyncClient, identity) -> None:
    response = await client.put("/api/v1/usage", headers=identity.headers())

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/generations", "GET, HEAD, POST"),
        ("/api/v1/generations/7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69", "DELETE, GET, HEAD, PATCH"),
        # Served, though hidden from the OpenAPI document.
        ("/api/v1/catalog", "GET, HEAD"),
        # A stream has no HEAD: it would hold the connection until the job ends.
        ("/api/v1/generations/7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69/events", "GET"),
    ],
)
async def test_a_405_names_every_method_of_its_path(
    client: httpx.AsyncClient, identity, path: str, allowed: str
) -> None:
    """Routes of one path are declared apart (a GET, a POST): the Allow header lists
    them all (RFC 9110 15.5.6), not the first route's alone."""
    response = await client.put(path, headers=identity.headers())

    assert response.status_code == 405
    assert response.headers["Allow"] == allowed


async def test_our_request_id_is_echoed_and_propagated_never_the_callers(
    client: httpx.AsyncClient, backends, identity
) -> None:
    response = await client.get(
        "/api/v1/usage", headers={**identity.headers(), "X-Request-ID": "req-abc.123"}
    )

    ours = response.headers["X-Request-ID"]
    assert ours != "req-abc.123"
    assert len(ours) == 32
    (call,) = backends.usage.recorder.calls
    assert call.metadata["x-request-id"] == ours


@pytest.mark.parametrize(
    "incoming", ["", "has spaces", "x" * 65, "tab\there", "semi;colon", 'quote"d', "a/b"]
)
async def test_malformed_request_ids_are_replaced(
    client: httpx.AsyncClient, backends, identity, incoming: str
) -> None:
    response = await client.get(
        "/api/v1/usage", headers={**identity.headers(), "X-Request-ID": incoming}
    )

    generated = response.headers["X-Request-ID"]
    assert generated != incoming
    assert len(generated) == 32
    (call,) = backends.usage.recorder.calls
    assert call.metadata["x-request-id"] == generated


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
