"""Public renders served from the real S3 server, and nothing else under /public."""

from __future__ import annotations

import uuid

import httpx
import pytest

from kit.settings import S3Settings
from kit.storage import ObjectStorage

RENDER_ID = str(uuid.uuid4())
IMAGE = b"\xff\xd8\xff\xe0" + b"rendered-pixels" * 500


@pytest.fixture(scope="session")
async def stored_render(s3_server) -> str:
    """A render variant in the real public bucket; returns its render id."""
    storage = ObjectStorage(S3Settings.model_validate(s3_server.env()))
    await storage.ensure_bucket("public")
    await storage.ensure_bucket("private")
    await storage.put_bytes("public", f"renders/{RENDER_ID}/0.jpg", IMAGE, "image/jpeg")
    # Objects a traversal would aim at; they must never be served.
    await storage.put_bytes("public", "secret.jpg", b"not for you", "image/jpeg")
    await storage.put_bytes("private", f"renders/{RENDER_ID}/0.jpg", b"private", "image/jpeg")
    return RENDER_ID


@pytest.fixture
async def public_client(edge_clients, s3_server, stored_render) -> httpx.AsyncClient:
    return await edge_clients.open(edge_clients.make_settings(**s3_server.env()))


async def test_serves_a_stored_render_without_auth(public_client: httpx.AsyncClient) -> None:
    response = await public_client.get(f"/public/renders/{RENDER_ID}/0.jpg")

    assert response.status_code == 200
    assert response.content == IMAGE
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"].startswith('"')
    assert response.headers["x-request-id"]


async def test_head_and_conditional_get(public_client: httpx.AsyncClient) -> None:
    path = f"/public/renders/{RENDER_ID}/0.jpg"
    full = await public_client.get(path)

    head = await public_client.head(path)
    again = await public_client.get(path, headers={"If-None-Match": full.headers["etag"]})

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == full.headers["etag"]
    assert head.headers["content-length"] == str(len(IMAGE))
    assert again.status_code == 304
    assert again.content == b""


async def test_a_missing_render_is_json_404(public_client: httpx.AsyncClient) -> None:
    response = await public_client.get(f"/public/renders/{uuid.uuid4()}/0.jpg")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "path",
    [
        "/public/",
        "/public/renders",
        "/public/renders/",
        f"/public/renders/{RENDER_ID}",
        f"/public/renders/{RENDER_ID}/",
        "/public/secret.jpg",
        "/public/renders/%2e%2e/secret.jpg",
        "/public/renders/%2E%2E/%2E%2E/secret.jpg",
        f"/public/renders/{RENDER_ID}/%2e%2e%2f%2e%2e%2fsecret.jpg",
        f"/public/renders/{RENDER_ID}/..%2f..%2fsecret.jpg",
        f"/public/renders/{RENDER_ID.upper()}/0.jpg",
        "/public/renders/not-a-uuid/0.jpg",
        f"/public/renders/{RENDER_ID}/01.jpg",
        f"/public/renders/{RENDER_ID}/-1.jpg",
        f"/public/renders/{RENDER_ID}/one.jpg",
        f"/public/renders/{RENDER_ID}/0.png",
        f"/public/renders/{RENDER_ID}/0.jpg.bak",
        f"/public/renders/{RENDER_ID}/0.jpg%00",
        f"/public/renders/{RENDER_ID}/1000.jpg",
        f"/public/renders/{RENDER_ID}/0.jpg/x",
    ],
)
async def test_nothing_else_is_served(public_client: httpx.AsyncClient, path: str) -> None:
    response = await public_client.get(path)

    assert response.status_code == 404, response.content[:100]
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_public_files_are_not_served_when_a_public_base_url_is_set(
    edge_clients, s3_server, stored_render
) -> None:
    client = await edge_clients.open(
        edge_clients.make_settings(**s3_server.env(), S3_PUBLIC_BASE_URL="https://cdn.example.com")
    )

    response = await client.get(f"/public/renders/{RENDER_ID}/0.jpg")

    assert response.status_code == 404
