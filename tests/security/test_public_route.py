"""The public render route serves exactly ``public/renders/<uuid>/<idx>.jpg``, nothing else.

Paths are sent byte for byte over a raw socket (HTTP clients would normalize
``..`` and escapes away), straight to the edge and through the real Envoy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from testkit.envoy import Envoy
from testkit.stack import Stack
from tests.e2e.harness import User, jpeg_bytes, objects_under


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(base_url: str, path: str, method: str = "GET") -> Answer:
    """One HTTP/1.1 request with ``path`` exactly as given."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=15)
        status_line, *lines = head.decode("latin-1").strip().split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        # Read exactly the body: Envoy keeps a closing connection open a while (delayed close).
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), timeout=15)
    finally:
        writer.close()
    return Answer(int(status_line.split()[1]), headers, body)


@dataclass(frozen=True)
class Render:
    render_id: str
    input_key: str


@pytest.fixture(scope="module")
async def render(stack: Stack) -> Render:
    """A finished job's render, and the owner's private input (the prize of a traversal)."""
    async with httpx.AsyncClient(timeout=30) as client:
        owner = User(stack, client)
        response = await owner.submit("redesign", images=[jpeg_bytes()])
        assert response.status_code == 202, response.text
        job = await owner.wait_for(response.json()["id"], {"succeeded"})
    [input_key] = await objects_under(stack, "private", f"{owner.id}/inputs/")
    render_id = job["variants"][0]["url"].split("/public/renders/", 1)[1].split("/")[0]
    # Another object in the public bucket, outside renders/: never reachable either.
    await stack.ctx.storage.put_bytes("public", "notes/secret.txt", b"secret", "text/plain")
    return Render(render_id, input_key)


def bad_paths(render: Render) -> list[str]:
    rid, key = render.render_id, render.input_key
    escaped_key = quote(key, safe="")
    return [
        # Traversal, plain and encoded.
        f"/public/renders/{rid}/../../../private/{key}",
        f"/public/renders/{rid}/..%2f..%2f..%2fprivate%2f{escaped_key}",
        f"/public/renders/{rid}/%2e%2e/%2e%2e/%2e%2e/private/{key}",
        f"/public/renders/%2e%2e/%2e%2e/private/{key}",
        f"/public/renders/{rid}/..\\..\\..\\private\\{key.replace('/', chr(92))}",
        f"/public/renders/{rid}/..%5c..%5c..%5cprivate%5c{escaped_key}",
        f"/public/renders/{rid}/%252e%252e%252f%252e%252e%252fprivate%252f{escaped_key}",
        f"/public/renders/{rid}/0.jpg%00",
        f"/public/renders/{rid}/0.jpg%00.png",
        # Listings.
        "/public",
        "/public/",
        "/public/renders",
        "/public/renders/",
        f"/public/renders/{rid}",
        f"/public/renders/{rid}/",
        f"/public/renders/{rid}?list-type=2",
        # Other buckets and keys.
        f"/private/{key}",
        f"/public/private/{key}",
        f"/public/renders/../../private/{key}",
        "/public/notes/secret.txt",
        f"/public/renders/{rid}/../../notes/secret.txt",
        # Not a render file name.
        f"/public/renders/{rid}/0.png",
        f"/public/renders/{rid}/0.jpeg",
        f"/public/renders/{rid}/0.JPG",
        f"/public/renders/{rid}/0.jpg/",
        f"/public/renders/{rid}/0.jpg.bak",
        f"/public/renders/{rid}/-1.jpg",
        f"/public/renders/{rid}/00.jpg",
        f"/public/renders/{rid}/1000.jpg",
        f"/public/renders/{rid}/99999999999999999999.jpg",
        f"/public/renders/{rid}/1e3.jpg",
        f"/public/renders/{rid.upper()}/0.jpg",
        f"/public/renders/{rid[:-1]}/0.jpg",
        f"/public/renders/{uuid.uuid4()}/0.jpg",
        f"/public/renders/{rid}/0.jpg%0a",
    ]


def _assert_not_found(answer: Answer, path: str) -> None:
    assert answer.status == 404, (path, answer.status, answer.body[:200])
    assert answer.json() == {"error": {"code": "NOT_FOUND", "message": "Not found."}}, path
    assert answer.headers.get("x-request-id"), path
    assert b"\xff\xd8\xff" not in answer.body


async def test_the_render_itself_is_served(stack: Stack, envoy: Envoy, render: Render) -> None:
    for base in (stack.edge.base_url, envoy.url):
        answer = await raw_request(base, f"/public/renders/{render.render_id}/0.jpg")
        assert answer.status == 200, (base, answer.body[:200])
        assert answer.body.startswith(b"\xff\xd8\xff")
        assert answer.headers["content-type"] == "image/jpeg"


async def test_anything_else_is_404_at_the_edge(stack: Stack, render: Render) -> None:
    for path in bad_paths(render):
        _assert_not_found(await raw_request(stack.edge.base_url, path), path)


async def test_anything_else_is_404_through_envoy(envoy: Envoy, render: Render) -> None:
    for path in bad_paths(render):
        answer = await raw_request(envoy.url, path)
        lowered = path.lower()
        if "%00" in path or "%2f" in lowered or "%5c" in lowered:
            # Envoy refuses an encoded NUL or an escaped slash in a path outright
            # (path_with_escaped_slashes_action: REJECT_REQUEST): its own JSON 400.
            assert answer.status == 400, (path, answer.status)
            assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
            continue
        _assert_not_found(answer, path)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_the_route_is_read_only(
    stack: Stack, envoy: Envoy, render: Render, method: str
) -> None:
    path = f"/public/renders/{render.render_id}/0.jpg"
    through_envoy = await raw_request(envoy.url, path, method)
    _assert_not_found(through_envoy, path)
    at_edge = await raw_request(stack.edge.base_url, path, method)
    assert at_edge.status == 405
    assert at_edge.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert (await raw_request(envoy.url, path)).status == 200


async def test_a_deleted_render_is_gone_at_the_edge_and_through_envoy(
    stack: Stack, envoy: Envoy, user: User
) -> None:
    response = await user.submit("imagine", prompt="A calm reading nook")
    assert response.status_code == 202, response.text
    job = await user.wait_for(response.json()["id"], {"succeeded"})
    path = urlsplit(job["variants"][0]["url"]).path
    for base in (stack.edge.base_url, envoy.url):
        served = await raw_request(base, path)
        assert served.status == 200, base
        # Cached briefly, never for a year: deletion has to take effect.
        assert served.headers["cache-control"] == "public, max-age=60", base
        assert served.headers["x-content-type-options"] == "nosniff", base

    assert (await user.delete(job["id"])).status_code == 200

    for base in (stack.edge.base_url, envoy.url):
        answer = await raw_request(base, path)
        _assert_not_found(answer, path)
        assert answer.headers["x-content-type-options"] == "nosniff", base
