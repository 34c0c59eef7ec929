"""Inputs in the private bucket are reachable only through a valid, unexpired signed URL.

Requests go straight to the real S3 server, as an outsider would try.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from kit.storage import ObjectStorage
from testkit.plugin import S3Endpoint
from testkit.stack import Stack
from tests.e2e.harness import User, jpeg_bytes, objects_under


@pytest.fixture
async def input_key(stack: Stack, user: User) -> str:
    response = await user.submit("redesign", images=[jpeg_bytes()])
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})
    [key] = await objects_under(stack, "private", f"{user.id}/inputs/")
    return key


def _storage(stack: Stack) -> ObjectStorage:
    return stack.ctx.storage


@pytest.fixture
def s3_base(s3_server: S3Endpoint) -> str:
    return f"http://{s3_server.endpoint}"


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_anonymous_reads_of_private_inputs_are_403(
    http: httpx.AsyncClient, user: User, input_key: str, s3_base: str
) -> None:
    for url in (
        f"{s3_base}/private/{input_key}",
        f"{s3_base}/private/{input_key}?X-Amz-Expires=300",
        f"{s3_base}/private?list-type=2",
        f"{s3_base}/private?list-type=2&prefix={user.id}/",
        f"{s3_base}/private/",
        f"{s3_base}/",
    ):
        response = await http.get(url)
        assert response.status_code == 403, (url, response.status_code, response.text[:200])
        assert response.content.find(b"\xff\xd8\xff") == -1


async def test_a_signed_url_works_until_it_expires(
    stack: Stack, http: httpx.AsyncClient, input_key: str
) -> None:
    url = await _storage(stack).presigned_get_url("private", input_key, 1)
    first = await http.get(url)
    assert first.status_code == 200
    assert first.content.startswith(b"\xff\xd8\xff")
    # Expiry is real time on the S3 server's clock: ask until it refuses, with a deadline.
    deadline = asyncio.get_running_loop().time() + 10
    expired = await http.get(url)
    while expired.status_code == 200 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        expired = await http.get(url)
    assert expired.status_code == 403, expired.text[:200]


async def test_tampered_signed_urls_are_403(
    stack: Stack, http: httpx.AsyncClient, user: User, input_key: str
) -> None:
    url = await _storage(stack).presigned_get_url("private", input_key, 300)
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_key = f"{user.id}/inputs/{uuid.uuid4()}.jpg"
    tampered = [
        _with_query(url, **{"X-Amz-Signature": flipped}),
        _with_query(url, **{"X-Amz-Expires": "604800"}),
        _with_query(url, **{"X-Amz-Date": "20300101T000000Z"}),
        url.replace(input_key, other_key),
        url.replace("/private/", "/public/"),
    ]
    for candidate in tampered:
        response = await http.get(candidate)
        assert response.status_code == 403, (candidate, response.status_code)
    # A missing signature is a malformed request to S3 (400); refused all the same.
    empty = await http.get(_with_query(url, **{"X-Amz-Signature": ""}))
    assert empty.status_code in {400, 403}
    assert not empty.content.startswith(b"\xff\xd8\xff")
    assert (await http.get(url)).status_code == 200
