"""GET /catalog, the OpenAPI document's enums and limits, CORS and cache headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edge_api.openapi import ERROR_CODES, OPERATION_IDS
from kit.errors import ALL_ERRORS
from kit.modes import MODE_KEYS, MODE_RULES
from kit.runtime_config import RuntimeConfig

BOUNDARY = "catalog-test-boundary"
ALLOWED = "http://localhost:3000"


def _enum(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The values of an enum schema, written inline or as a shared component."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return list(schema["enum"])


def _multipart(fields: dict[str, str], files: dict[str, bytes]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts += [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
        for k, data in files.items()
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def test_the_catalog_is_the_runtime_config(
    client: httpx.AsyncClient, runtime_config: RuntimeConfig
) -> None:
    response = await client.get("/api/v1/catalog")  # no token: product information

    assert response.status_code == 200
    body = response.json()
    assert body["modes"] == [
        {"key": rule.key, "images": rule.images, "promptRequired": rule.prompt_required}
        for rule in MODE_RULES
    ]
    assert body["styles"] == [
        {"key": key, "label": choice.label} for key, choice in runtime_config.styles.items()
    ]
    assert body["roomTypes"] == [
        {"key": key, "label": choice.label} for key, choice in runtime_config.room_types.items()
    ]
    assert body["upload"] == {
        "maxBytes": runtime_config.uploads.max_bytes,
        "types": list(runtime_config.uploads.accepted_mime_types),
    }
    assert body["prompt"] == {"maxLength": runtime_config.prompts.max_length}
    assert response.headers["cache-control"] == "public, max-age=300"
    assert "seed" not in response.text  # the prompt text behind a style stays server-side


async def test_the_catalog_answers_304_to_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/catalog")
    etag = first.headers["etag"]

    again = await client.get("/api/v1/catalog", headers={"If-None-Match": etag})
    other = await client.get("/api/v1/catalog", headers={"If-None-Match": '"stale"'})
    # Weak comparison (RFC 9110 13.1.2): a compressing proxy or CDN sends the tag weak.
    weak = await client.get("/api/v1/catalog", headers={"If-None-Match": f'"x", W/{etag}'})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert other.status_code == 200
    assert weak.status_code == 304


async def test_every_operation_has_a_person_made_operation_id(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()

    operations = {
        (path, method): operation.get("operationId")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert operations == OPERATION_IDS  # a new route without a name fails here


async def test_enums_come_from_the_config_and_the_error_types(
    client: httpx.AsyncClient, runtime_config: RuntimeConfig
) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    schemas = document["components"]["schemas"]
    submit = document["paths"]["/api/v1/generations"]["post"]["requestBody"]["content"]
    form = submit["multipart/form-data"]["schema"]["properties"]

    assert _enum(document, form["mode"]) == list(MODE_KEYS)
    assert _enum(document, form["style"]) == sorted(runtime_config.styles)
    assert _enum(document, form["roomType"]) == sorted(runtime_config.room_types)
    assert _enum(document, schemas["JobOut"]["properties"]["status"]) == [
        "starting",
        "processing",
        "succeeded",
        "failed",
        "canceled",
    ]
    assert _enum(document, schemas["JobSettingsOut"]["properties"]["mode"]) == list(MODE_KEYS)
    codes = schemas["ErrorDetail"]["properties"]["code"]["enum"]
    assert codes == list(ERROR_CODES)
    assert {error.code for error in ALL_ERRORS} <= set(codes)


def _inline_enums(node: Any) -> list[frozenset[str]]:
    """The value sets of every enum written inline below ``node``."""
    found: list[frozenset[str]] = []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    if isinstance(node, dict) and "enum" in node:
        found.append(frozenset(node["enum"]))
    for child in children:
        found.extend(_inline_enums(child))
    return found


async def test_each_kind_of_choice_is_one_shared_enum(
    client: httpx.AsyncClient, runtime_config: RuntimeConfig
) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    schemas = document["components"]["schemas"]
    shared = {name: schemas.pop(name) for name in ("Mode", "RoomType", "Style", "JobStatus")}
    form = document["paths"]["/api/v1/generations"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]
    settings = schemas["JobSettingsOut"]["properties"]

    assert shared["Style"]["enum"] == sorted(runtime_config.styles)
    # A generated client gets one class each: no inline copy is left anywhere.
    assert not {frozenset(s["enum"]) for s in shared.values()} & set(_inline_enums(document))
    assert form["style"]["$ref"] == "#/components/schemas/Style"
    assert {"$ref": "#/components/schemas/RoomType"} in settings["roomType"]["anyOf"]
    assert schemas["CatalogModeOut"]["properties"]["key"]["$ref"] == "#/components/schemas/Mode"


async def test_published_limits_are_the_enforced_limits(
    client: httpx.AsyncClient, backends, identity, runtime_config: RuntimeConfig
) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    submit = document["paths"]["/api/v1/generations"]["post"]["requestBody"]["content"]
    form = submit["multipart/form-data"]["schema"]["properties"]
    prompt_limit, file_limit = form["prompt"]["maxLength"], form["input1"]["maxLength"]
    assert prompt_limit == runtime_config.prompts.max_length
    assert submit["application/json"]["schema"]["properties"]["prompt"]["maxLength"] == (
        prompt_limit
    )
    assert file_limit == runtime_config.uploads.max_bytes

    at_limit = await client.post(
        "/api/v1/generations",
        headers=identity.headers(),
        json={"mode": "imagine", "prompt": "a" * prompt_limit},
    )
    over_limit = await client.post(
        "/api/v1/generations",
        headers=identity.headers(),
        json={"mode": "imagine", "prompt": "a" * (prompt_limit + 1)},
    )
    assert at_limit.status_code == 202, at_limit.text
    assert over_limit.status_code == 400
    assert over_limit.json()["error"]["code"] == "VALIDATION_ERROR"
    assert len(backends.generation.recorder.calls) == 1  # the refused one never left the edge

    too_big = await client.post(
        "/api/v1/generations",
        headers={
            **identity.headers(),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
        content=_multipart(
            {"mode": "redesign"}, {"input1": b"\xff\xd8\xff" + b"0" * (file_limit - 2)}
        ),
    )
    assert too_big.status_code == 413


@pytest.mark.parametrize("path", ["/api/v1/generations", "/api/v1/usage"])
async def test_a_preflight_from_an_allowed_origin_is_answered(edge_clients, path: str) -> None:
    client = await edge_clients.open(edge_clients.make_settings(CORS_ALLOWED_ORIGINS=ALLOWED))

    response = await client.options(
        path,
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    # What every answer carries, though a preflight never reaches the request context.
    assert response.headers["x-request-id"]
    assert response.headers["vary"] == "Origin"
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {
        "GET",
        "POST",
        "PATCH",
        "DELETE",
    }
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key", "last-event-id"):
        assert header in allowed_headers


@pytest.mark.parametrize(
    ("configured", "browser_origin"),
    [
        ("http://LocalHost:3000", "http://localhost:3000"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("HTTP://app.example.com:80/", "http://app.example.com"),
    ],
)
async def test_a_configured_origin_matches_what_a_browser_sends(
    edge_clients, configured: str, browser_origin: str
) -> None:
    """Browsers write an Origin in lowercase without the default port (RFC 6454 6.1);
    the middleware compares strings, so a configured origin is written the same way."""
    settings = edge_clients.make_settings(CORS_ALLOWED_ORIGINS=configured)
    client = await edge_clients.open(settings)

    response = await client.get("/api/v1/catalog", headers={"Origin": browser_origin})

    assert response.headers.get("access-control-allow-origin") == browser_origin
    assert settings.cors_origins() == (browser_origin,)


async def test_an_allowed_origin_reads_answers_and_their_headers(edge_clients, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(CORS_ALLOWED_ORIGINS=ALLOWED))

    response = await client.get("/api/v1/usage", headers={**identity.headers(), "Origin": ALLOWED})
    refused = await client.get("/api/v1/usage", headers={"Origin": ALLOWED})  # no token

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = response.headers["access-control-expose-headers"]
    assert {h.strip() for h in exposed.split(",")} == {
        "Location",
        "X-Request-ID",
        "Idempotent-Replayed",
    }
    assert refused.status_code == 401  # errors are readable by the page too
    assert refused.headers["access-control-allow-origin"] == ALLOWED


async def test_other_origins_get_no_cors_headers(edge_clients, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(CORS_ALLOWED_ORIGINS=ALLOWED))
    evil = "https://evil.example"

    preflight = await client.options(
        "/api/v1/generations",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
    )
    actual = await client.get("/api/v1/usage", headers={**identity.headers(), "Origin": evil})

    assert preflight.status_code == 400
    assert preflight.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "x-request-id" in preflight.headers
    assert preflight.headers["cache-control"] == "no-store"
    assert preflight.headers["vary"] == "Origin"
    for answer in (preflight, actual):
        assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert actual.status_code == 200


async def test_cacheable_answers_vary_on_origin_whatever_the_origin(edge_clients) -> None:
    """A shared cache must keep an answer without CORS headers (an <img> load sends no
    Origin) apart from the one an allowed origin gets."""
    client = await edge_clients.open(edge_clients.make_settings(CORS_ALLOWED_ORIGINS=ALLOWED))
    for origin in (None, "https://evil.example", ALLOWED):
        headers = {} if origin is None else {"Origin": origin}
        response = await client.get("/api/v1/catalog", headers=headers)
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("public")
        varies = {v.strip().lower() for v in response.headers.get("vary", "").split(",")}
        assert "origin" in varies, (origin, response.headers.get("vary"))


async def test_without_configured_origins_nobody_gets_cors(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/v1/usage",
        headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
    )

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_an_origin_must_be_an_origin(edge_clients) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        edge_clients.make_settings(CORS_ALLOWED_ORIGINS="http://ok.test, *")


async def test_api_answers_are_never_stored_but_the_catalog_is_cached(
    client: httpx.AsyncClient, identity
) -> None:
    usage = await client.get("/api/v1/usage", headers=identity.headers())
    missing = await client.get(
        "/api/v1/generations/00000000-0000-0000-0000-000000000000", headers=identity.headers()
    )
    unauthenticated = await client.get("/api/v1/usage")
    catalog = await client.get("/api/v1/catalog")
    health = await client.get("/healthz")

    for answer in (usage, missing, unauthenticated):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    assert catalog.headers["cache-control"] == "public, max-age=300"
    assert "cache-control" not in health.headers


async def test_head_of_the_catalog_answers_like_get_without_a_body(edge_clients) -> None:
    client = await edge_clients.open(edge_clients.make_settings())
    get = await client.get("/api/v1/catalog")

    head = await client.head("/api/v1/catalog")
    current = await client.head("/api/v1/catalog", headers={"If-None-Match": get.headers["etag"]})

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["cache-control"] == get.headers["cache-control"]
    assert current.status_code == 304
