"""Public renders served from the real S3 server, and nothing else under /public."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tracemalloc
import uuid
from collections.abc import MutableMapping
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from kit.settings import S3Settings
from kit.storage import STREAM_CHUNK_BYTES, ObjectStorage, ObjectStream

# Fixed, not random: test ids name it, and they must be the same at every collection.
RENDER_ID = "534c5cc5-a8cc-474c-88ff-4de0e1045b84"
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
    settings = edge_clients.make_settings(**s3_server.env())
    return cast(httpx.AsyncClient, await edge_clients.open(settings))


async def test_serves_a_stored_render_without_auth(public_client: httpx.AsyncClient) -> None:
    response = await public_client.get(f"/public/renders/{RENDER_ID}/0.jpg")

    assert response.status_code == 200
    assert response.content == IMAGE
    assert response.headers["content-type"] == "image/jpeg"
    # Short-lived, never immutable: a deleted render's file must drop out of caches.
    assert response.headers["cache-control"] == "public, max-age=60"
    assert response.headers["etag"].startswith('"')
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-length"] == str(len(IMAGE))


async def test_head_and_conditional_get(public_client: httpx.AsyncClient) -> None:
    path = f"/public/renders/{RENDER_ID}/0.jpg"
    full = await public_client.get(path)

    head = await public_client.head(path)
    again = await public_client.get(path, headers={"If-None-Match": full.headers["etag"]})
    weak = await public_client.get(path, headers={"If-None-Match": "W/" + full.headers["etag"]})

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == full.headers["etag"]
    assert head.headers["content-length"] == str(len(IMAGE))
    assert again.status_code == 304
    assert again.content == b""
    assert weak.status_code == 304
    assert again.headers["etag"] == full.headers["etag"]
    assert again.headers["cache-control"] == "public, max-age=60"
    for answer in (head, again):
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_stale_etag_gets_the_full_body(public_client: httpx.AsyncClient) -> None:
    response = await public_client.get(
        f"/public/renders/{RENDER_ID}/0.jpg", headers={"If-None-Match": '"stale"'}
    )

    assert response.status_code == 200
    assert response.content == IMAGE


async def test_a_missing_render_is_json_404(public_client: httpx.AsyncClient) -> None:
    response = await public_client.get(f"/public/renders/{uuid.uuid4()}/0.jpg")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_missing_render_is_404_for_head_and_revalidation(
    public_client: httpx.AsyncClient,
) -> None:
    path = f"/public/renders/{uuid.uuid4()}/0.jpg"
    head = await public_client.head(path)
    revalidated = await public_client.get(path, headers={"If-None-Match": '"gone"'})

    for response in (head, revalidated):
        assert response.status_code == 404
        assert response.headers["x-content-type-options"] == "nosniff"


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


@pytest.mark.parametrize(
    "path",
    [
        f"/public/renders/{RENDER_ID.upper()}/0.jpg",
        f"/public/renders/{RENDER_ID}/0.png",
        f"/public/renders/{RENDER_ID}/01.jpg",
        "/public/renders/%2e%2e/secret.jpg",
    ],
)
async def test_paths_the_route_refuses_say_nosniff(
    public_client: httpx.AsyncClient, path: str
) -> None:
    for response in (await public_client.get(path), await public_client.head(path)):
        assert response.status_code == 404
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_public_files_are_not_served_when_a_public_base_url_is_set(
    edge_clients, s3_server, stored_render
) -> None:
    client = await edge_clients.open(
        edge_clients.make_settings(**s3_server.env(), S3_PUBLIC_BASE_URL="https://cdn.example.com")
    )

    response = await client.get(f"/public/renders/{RENDER_ID}/0.jpg")

    assert response.status_code == 404


LARGE_BYTES = 12 * 1024 * 1024


async def _get_raw(
    app: FastAPI, path: str, disconnect_after: int | None = None
) -> tuple[int, list[int]]:
    """One GET straight through the ASGI interface: the status and each body part's size.

    No HTTP client in between, so nothing buffers the body: every part the app
    sends is measured and dropped at once. With ``disconnect_after``, the client
    goes away (the send fails as a closed socket does) after that many parts.
    """
    parts: list[int] = []
    status = 0

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            if disconnect_after is not None and len(parts) >= disconnect_after:
                raise OSError("client went away")
            parts.append(len(message.get("body", b"")))

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never goes away in this test
        raise AssertionError("unreachable")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"edge.test")],
        "server": ("edge.test", 80),
        "client": ("127.0.0.1", 50000),
    }
    await app(scope, receive, send)
    return status, parts


class RecordingStorage:
    """The edge's real storage, keeping every object stream it opens for inspection."""

    def __init__(self, inner: ObjectStorage) -> None:
        self._inner = inner
        self.streams: list[ObjectStream] = []

    async def open_stream(self, bucket: str, key: str) -> ObjectStream | None:
        stream = await self._inner.open_stream(bucket, key)
        if stream is not None:
            self.streams.append(stream)
        return stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _large_render(s3_server) -> str:
    storage = ObjectStorage(S3Settings.model_validate(s3_server.env()))
    render_id = str(uuid.uuid4())
    await storage.put_bytes(
        "public", f"renders/{render_id}/0.jpg", os.urandom(LARGE_BYTES), "image/jpeg"
    )
    return f"/public/renders/{render_id}/0.jpg"


async def _recorded_app(edge_clients, s3_server) -> tuple[FastAPI, RecordingStorage]:
    apps: list[FastAPI] = []
    await edge_clients.open(edge_clients.make_settings(**s3_server.env()), prepare=apps.append)
    clients = apps[0].state.edge.clients
    recording = RecordingStorage(clients.storage)
    clients.storage = recording
    return apps[0], recording


async def test_a_large_render_is_streamed_in_chunks_never_held_whole(
    edge_clients, s3_server, stored_render
) -> None:
    path = await _large_render(s3_server)
    app, storage = await _recorded_app(edge_clients, s3_server)

    tracemalloc.start()
    try:
        status, parts = await _get_raw(app, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert status == 200
    assert sum(parts) == LARGE_BYTES
    assert max(parts) <= STREAM_CHUNK_BYTES
    assert len(parts) >= LARGE_BYTES // STREAM_CHUNK_BYTES
    # Loading the object whole would cost at least its 12 MiB; streaming, a few chunks.
    assert peak < 3 * 1024 * 1024, peak
    [stream] = storage.streams
    assert stream.closed


async def test_a_client_that_goes_away_mid_body_closes_the_storage_stream(
    edge_clients, s3_server, stored_render
) -> None:
    path = await _large_render(s3_server)
    app, storage = await _recorded_app(edge_clients, s3_server)

    with contextlib.suppress(Exception):  # how the app reports the disconnect is its own
        await _get_raw(app, path, disconnect_after=2)

    [stream] = storage.streams
    assert stream.closed
    # It stopped reading from storage too: nowhere near the object's 192 chunks.
    assert stream.chunks_read <= 4
