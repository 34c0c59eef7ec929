"""``python -m edge_api`` as a real process behind real sockets.

One edge process (module-scoped) talks to the suite's gRPC backends; its JSON
log file is read back to check the access log and that secrets never appear.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest

from interior.generation.v1 import generation_pb2
from launcher.components import ChildProcess, free_port
from testkit.config import REPO_RUNTIME_CONFIG

MAX_UPLOAD_BYTES = 64 * 1024
PROMPT = "a very private prompt about my bedroom"


@dataclass
class LiveEdge:
    process: ChildProcess
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def small_runtime_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = REPO_RUNTIME_CONFIG.read_text(encoding="utf-8")
    assert "max_bytes = 10485760" in text
    path = tmp_path_factory.mktemp("edge-config") / "runtime.toml"
    path.write_text(text.replace("max_bytes = 10485760", f"max_bytes = {MAX_UPLOAD_BYTES}"))
    return path


def _start_edge(
    backends, identity, runtime_config: Path, log_path: Path, grace: float = 3
) -> tuple[ChildProcess, int]:
    port = free_port()
    child = ChildProcess(
        "edge",
        [sys.executable, "-m", "edge_api"],
        env={
            "EDGE_HTTP_HOST": "127.0.0.1",
            "EDGE_HTTP_PORT": str(port),
            "GENERATION_GRPC_TARGET": backends.target,
            "USAGE_GRPC_TARGET": backends.target,
            "AUTH_JWT_SECRET": identity.secret,
            "RUNTIME_CONFIG_FILE": str(runtime_config),
            "S3_ENDPOINT": "127.0.0.1:9",
            "S3_ACCESS_KEY": "unused",
            "S3_SECRET_KEY": "unused-secret",
            "LOG_LEVEL": "INFO",
            "SHUTDOWN_GRACE_SECONDS": str(grace),
        },
        log_path=log_path,
    )
    child.start()
    return child, port


async def _wait_healthy(child: ChildProcess, port: int, timeout: float = 20.0) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(int(timeout / 0.05)):
            if not child.alive():
                raise RuntimeError("the edge exited during start-up")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("the edge did not become healthy")


@pytest.fixture(scope="module")
def live_process(
    backends, identity, small_runtime_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveEdge]:
    log_path = tmp_path_factory.mktemp("edge-live") / "edge.log"
    child, port = _start_edge(backends, identity, small_runtime_config, log_path)
    try:
        yield LiveEdge(child, port, log_path)
    finally:
        child.stop(grace=10)


@pytest.fixture
async def live(live_process: LiveEdge) -> LiveEdge:
    await _wait_healthy(live_process.process, live_process.port)
    return live_process


async def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A request with the target exactly as given (HTTP clients normalize dots away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_real_http_round_trip_with_request_id(live: LiveEdge, backends, identity) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.get(
            "/api/v1/usage", headers={**identity.headers(), "X-Request-ID": "live-req-1"}
        )

    assert response.status_code == 200
    ours = response.headers["X-Request-ID"]
    assert ours != "live-req-1"
    assert response.json()["plan"] == "free"
    (call,) = backends.usage.recorder.calls
    assert call.metadata["x-request-id"] == ours


async def test_multipart_over_the_wire_with_forwarded_headers(
    live: LiveEdge, backends, identity
) -> None:
    image = b"\xff\xd8\xff" + bytes(range(256)) * 100
    headers = {**identity.headers(), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "x.example"}
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.post(
            "/api/v1/generations",
            headers=headers,
            data={"mode": "redesign", "prompt": PROMPT},
            files={"input1": ("room.jpg", image, "image/jpeg")},
        )

    assert response.status_code == 202, response.text
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.files == [("input1", image)]
    assert call.request.request_base_url == "https://x.example"


async def test_oversized_upload_over_the_wire_is_413(live: LiveEdge, backends, identity) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield (
            b'--b\r\nContent-Disposition: form-data; name="mode"\r\n\r\nredesign\r\n'
            b'--b\r\nContent-Disposition: form-data; name="input1"; filename="a"\r\n\r\n'
        )
        for _ in range(64):  # 4 MB, far over the 64 KiB limit
            yield b"z" * 65536

    headers = {**identity.headers(), "Content-Type": "multipart/form-data; boundary=b"}
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.post("/api/v1/generations", headers=headers, content=body())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


@pytest.mark.parametrize(
    "target",
    [
        "/public/renders/../secret.jpg",
        "/public/renders/../../etc/passwd",
        "/public/renders/%2e%2e/%2e%2e/secret.jpg",
        "/public/../api/v1/usage",
        "/public/",
        "/public/renders/",
    ],
)
async def test_raw_traversal_attempts_are_404(live: LiveEdge, target: str) -> None:
    status, body = await _raw_get(live.port, target)

    assert status == 404
    assert b'"NOT_FOUND"' in body


async def test_access_log_is_structured_and_holds_no_secrets(live: LiveEdge, identity) -> None:
    token = identity.token()
    job_path = "/api/v1/generations/00000000-0000-4000-8000-000000000000"
    async with httpx.AsyncClient(base_url=live.url) as client:
        await client.get(
            job_path + "?secret=query", headers={**identity.headers(token), "X-Request-ID": "log-1"}
        )
        await client.post(
            "/api/v1/generations", headers=identity.headers(token), json={"prompt": PROMPT}
        )

    await asyncio.sleep(0.2)  # the log line is written after the answer
    lines = live.log_lines()
    (entry,) = [line for line in lines if line.get("clientRequestId") == "log-1"]
    assert entry["event"] == "http.request"
    assert len(cast(str, entry["requestId"])) == 32  # ours, beside the caller's
    assert entry["method"] == "GET"
    assert entry["route"] == "/api/v1/generations/{job_id}"
    assert entry["status"] == 404
    assert entry["ownerId"] == identity.owner
    assert isinstance(entry["durationMs"], float)
    text = live.log_path.read_text(encoding="utf-8")
    assert token not in text
    assert PROMPT not in text
    assert "secret=query" not in text


async def test_the_path_of_a_request_no_route_took_is_not_logged(live: LiveEdge, identity) -> None:
    """It is the client's own text: an e-mail address was written as the ``route``."""
    email = "jane.doe+review@example.com"
    async with httpx.AsyncClient(base_url=live.url) as client:
        answer = await client.get(
            f"/api/v1/profiles/{email}",
            headers={**identity.headers(identity.token()), "X-Request-ID": "log-2"},
        )
    assert answer.status_code == 404

    await asyncio.sleep(0.2)  # the log line is written after the answer
    (entry,) = [line for line in live.log_lines() if line.get("clientRequestId") == "log-2"]
    assert entry["route"] == "<unmatched>"
    assert email not in live.log_path.read_text(encoding="utf-8")


async def test_sigterm_stops_gracefully(
    backends, identity, small_runtime_config: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "edge.log"
    child, port = _start_edge(backends, identity, small_runtime_config, log_path)
    try:
        await _wait_healthy(child, port)
        child.signal(signal.SIGTERM)
        for _ in range(200):
            if not child.alive():
                break
            await asyncio.sleep(0.05)
        assert child.process is not None
        # uvicorn re-raises the signal once it has shut down, so the exit says SIGTERM.
        assert child.process.returncode in (0, -signal.SIGTERM)
        log = log_path.read_text(encoding="utf-8")
        # The lifespan finished: the channels were closed before the exit.
        assert '"event": "edge.stopped"' in log
    finally:
        child.stop(grace=5)


async def test_sigterm_ends_open_event_streams_instead_of_waiting_out_the_grace(
    backends, identity, small_runtime_config: Path, tmp_path: Path
) -> None:
    """A stream can be resumed anywhere (Last-Event-ID), so a stopping edge has no reason
    to hold it: SIGTERM ends the open stream cleanly (EventSource resumes on another
    instance at once) and the process exits promptly. uvicorn used to wait for it as
    for any in-flight request, the whole SHUTDOWN_GRACE_SECONDS, then cut it."""
    grace = 6.0
    job = backends.generation.add_job(status=generation_pb2.JOB_STATUS_PROCESSING, version=3)
    child, port = _start_edge(backends, identity, small_runtime_config, tmp_path / "e.log", grace)
    try:
        await _wait_healthy(child, port)
        url = f"http://127.0.0.1:{port}/api/v1/generations/{job.id}/events"
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", url, headers=identity.headers()) as answer,
        ):
            assert answer.status_code == 200
            lines = answer.aiter_lines()
            assert (await anext(lines)).startswith("id: 3")
            began = time.monotonic()
            child.signal(signal.SIGTERM)
            ended_cleanly = True
            try:
                async for _ in lines:
                    pass
            except httpx.HTTPError:
                ended_cleanly = False
            stream_end = time.monotonic() - began
        for _ in range(400):
            if not child.alive():
                break
            await asyncio.sleep(0.05)
        exited = time.monotonic() - began
    finally:
        child.stop(grace=5)
    assert stream_end < grace / 2, f"the stream was held {stream_end:.1f} s after SIGTERM"
    assert ended_cleanly
    assert exited < grace / 2, f"the edge took {exited:.1f} s to stop"


async def _raw_send(port: int, request: bytes) -> bytes:
    """Bytes as given on a fresh connection, read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_every_line_of_stdout_and_stderr_is_json_without_the_token(
    backends, identity, small_runtime_config: Path, tmp_path: Path
) -> None:
    """uvicorn's own records (a malformed request, start and stop), our access log and
    an authentication failure all come out as JSON objects with the same fields."""
    log_path = tmp_path / "edge.log"  # stdout and stderr both
    token = identity.token()
    child, port = _start_edge(backends, identity, small_runtime_config, log_path)
    try:
        await _wait_healthy(child, port)
        # Not HTTP: uvicorn answers 400 and logs a warning of its own.
        garbage = f"GET / HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\0\r\n\r\n"
        await _raw_send(port, garbage.encode())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            refused = await client.get(
                "/api/v1/generations", headers=identity.headers(token + "tampered")
            )
        child.stop(grace=10)
    finally:
        child.stop(grace=5)

    text = log_path.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert refused.status_code == 401
    for line in lines:
        assert {"event", "level", "ts", "service"} <= line.keys(), line
        assert line["service"] == "edge-api"
    uvicorn_levels = {line["level"] for line in lines if line.get("component") == "uvicorn.error"}
    assert uvicorn_levels == {"info", "warning"}  # start/stop, and the malformed request
    assert any(line["event"] == "http.request" and line["status"] == 401 for line in lines)
    assert token not in text
