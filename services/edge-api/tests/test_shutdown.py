"""An edge process stopped (SIGTERM) while a Server-Sent Events stream is open."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt

from interior.generation.v1 import generation_pb2
from launcher.components import ChildProcess, free_port
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.standins import DEFAULT_OWNER, serving_backends

SECRET = "edge-test-secret-0123456789abcdef-0123456789"
GRACE = 6


def _token() -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": DEFAULT_OWNER,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_sigterm_ends_open_event_streams_instead_of_waiting_out_the_grace(
    tmp_path: Path,
) -> None:
    """A stream can be resumed anywhere (Last-Event-ID), so a stopping edge has no reason
    to hold it: SIGTERM ends the open stream cleanly (EventSource resumes on another
    instance at once) and the process exits promptly. uvicorn used to wait for it as
    for any in-flight request, the whole SHUTDOWN_GRACE_SECONDS, then cut it."""
    async with serving_backends() as backends:
        job = backends.generation.add_job(status=generation_pb2.JOB_STATUS_PROCESSING, version=3)
        port = free_port()
        child = ChildProcess(
            "edge",
            [sys.executable, "-m", "edge_api"],
            env={
                "EDGE_HTTP_HOST": "127.0.0.1",
                "EDGE_HTTP_PORT": str(port),
                "GENERATION_GRPC_TARGET": backends.target,
                "USAGE_GRPC_TARGET": backends.target,
                "AUTH_JWT_SECRET": SECRET,
                "RUNTIME_CONFIG_FILE": str(REPO_RUNTIME_CONFIG),
                "S3_ENDPOINT": "127.0.0.1:9",
                "S3_ACCESS_KEY": "unused",
                "S3_SECRET_KEY": "unused-secret",
                "LOG_LEVEL": "INFO",
                "SHUTDOWN_GRACE_SECONDS": str(GRACE),
            },
            log_path=tmp_path / "edge.log",
        )
        child.start()
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                for _ in range(400):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
                url = f"/api/v1/generations/{job.id}/events"
                headers = {"Authorization": f"Bearer {_token()}"}
                async with client.stream("GET", url, headers=headers) as answer:
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
    assert stream_end < GRACE / 2, f"the stream was held {stream_end:.1f} s after SIGTERM"
    assert ended_cleanly
    assert exited < GRACE / 2, f"the edge took {exited:.1f} s to stop"
