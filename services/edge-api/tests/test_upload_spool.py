"""Uploads are spooled, forwarded in chunks, and their temporary files always closed.

Every spool the edge opens is recorded (the factory is wrapped), so each test can
check that all of them were closed, whatever way the request ended.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import IO, cast

import httpx
import pytest

from edge_api import uploads
from edge_api.app import create_app
from kit.errors import PayloadTooLarge, ValidationError
from kit.runtime_config import Uploads
from testkit.recording import record_results
from testkit.servers import ThreadedUvicorn

BIG_MAX_BYTES = 2 * 1024 * 1024
BOUNDARY = "spool-test-boundary"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _text(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _file_head(name: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    """Every spool the edge creates during the test."""
    return record_results(monkeypatch, uploads, "_new_spool")


@pytest.fixture
async def big_client(runtime_config, edge_clients) -> httpx.AsyncClient:
    """An edge whose upload limit is 2 MiB: files larger than a spool's memory part."""
    uploads_config = Uploads(max_bytes=BIG_MAX_BYTES)
    edge_clients.runtime_config = runtime_config.model_copy(update={"uploads": uploads_config})
    return cast(httpx.AsyncClient, await edge_clients.open())


async def test_a_big_file_is_forwarded_in_chunks_and_its_spool_closed(
    big_client: httpx.AsyncClient, backends, identity, spools: list[IO[bytes]]
) -> None:
    data = os.urandom(1_500_000)  # over the spool's 1 MiB in memory: it went to disk
    # Text fields after the file: the whole form is read before anything is sent.
    body = _body(_file_head("input1"), data + b"\r\n", _text("mode", "redesign"))

    response = await big_client.post(
        "/api/v1/generations", headers={**identity.headers(), **HEADERS}, content=body
    )

    assert response.status_code == 202, response.text
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.request.mode == "redesign"
    assert [(i.field, i.size_bytes) for i in call.request.inputs] == [("input1", len(data))]
    assert call.files == [("input1", data)]
    assert max(call.chunk_sizes) == uploads.READ_CHUNK_BYTES
    assert len(call.chunk_sizes) == math.ceil(len(data) / uploads.READ_CHUNK_BYTES)
    assert len(spools) == 1
    assert all(spool.closed for spool in spools)


async def test_the_spool_of_a_file_over_the_limit_is_closed(
    client: httpx.AsyncClient, backends, identity, spools: list[IO[bytes]]
) -> None:
    body = _body(_text("mode", "redesign"), _file_head("input1"), b"x" * 70_000 + b"\r\n")

    response = await client.post(
        "/api/v1/generations", headers={**identity.headers(), **HEADERS}, content=body
    )

    assert response.status_code == 413
    assert backends.generation.recorder.calls == []
    assert len(spools) == 1
    assert spools[0].closed


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(_text("mode", "paint"), id="bad field after the files"),
        pytest.param(_file_head("input2") + b"\r\n", id="empty second file"),
    ],
)
async def test_spools_are_closed_when_the_form_is_refused_after_the_files(
    client: httpx.AsyncClient, backends, identity, spools: list[IO[bytes]], ending: bytes
) -> None:
    body = _body(_file_head("input1"), b"j" * 1000 + b"\r\n", ending)

    response = await client.post(
        "/api/v1/generations", headers={**identity.headers(), **HEADERS}, content=body
    )

    assert response.status_code == 400, response.text
    assert backends.generation.recorder.calls == []
    assert spools
    assert all(spool.closed for spool in spools)


async def test_a_refusal_after_the_request_part_is_mapped_and_the_stream_stops(
    big_client: httpx.AsyncClient, backends, identity, spools: list[IO[bytes]]
) -> None:
    backends.generation.refuse_request = PayloadTooLarge("input1 is larger than 1 MB")
    body = _body(_text("mode", "redesign"), _file_head("input1"), os.urandom(1_200_000) + b"\r\n")

    response = await big_client.post(
        "/api/v1/generations", headers={**identity.headers(), **HEADERS}, content=body
    )

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "input1 is larger than 1 MB",
    }
    assert all(spool.closed for spool in spools)


async def test_a_refusal_after_the_whole_stream_is_mapped_and_spools_closed(
    client: httpx.AsyncClient, backends, identity, spools: list[IO[bytes]]
) -> None:
    backends.generation.recorder.fail_with = ValidationError("compose needs two images")
    body = _body(_text("mode", "compose"), _file_head("input1"), b"j" * 5000 + b"\r\n")

    response = await client.post(
        "/api/v1/generations", headers={**identity.headers(), **HEADERS}, content=body
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "compose needs two images"
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.files == [("input1", b"j" * 5000)]
    assert all(spool.closed for spool in spools)


async def test_a_client_that_disconnects_mid_file_leaves_no_open_spool(
    make_settings, runtime_config, backends, identity, spools: list[IO[bytes]]
) -> None:
    app = create_app(make_settings(), runtime_config)
    head = _text("mode", "redesign") + _file_head("input1") + b"z" * 20_000
    request = (
        "POST /api/v1/generations HTTP/1.1\r\nHost: edge\r\n"
        f"Authorization: {identity.headers()['Authorization']}\r\n"
        f"Content-Type: {HEADERS['Content-Type']}\r\nContent-Length: 60000\r\n\r\n"
    ).encode()
    with ThreadedUvicorn(app, name="spool-edge") as edge:
        _, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(request + head)
        await writer.drain()
        deadline = time.monotonic() + 5
        while not spools and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        writer.close()  # gone before the file (and the form) is complete
        await writer.wait_closed()
        while not all(spool.closed for spool in spools) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert len(spools) == 1
    assert spools[0].closed
    assert backends.generation.recorder.calls == []
