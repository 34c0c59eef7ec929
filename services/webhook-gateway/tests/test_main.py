"""``python -m webhook_gateway`` as a process: it serves, forwards and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from launcher.components import free_port
from testkit.imports import DATABASE_PACKAGES, packages_loaded_by
from webhook_gateway.__main__ import main

if TYPE_CHECKING:
    from conftest import GenerationDouble

Signer = Callable[..., dict[str, str]]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "WEBHOOK_"))}
    env.pop("REPLICATE_WEBHOOK_SECRET", None)
    return {**env, **values}


async def _wait_healthy(base_url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as client:
        for _ in range(200):
            if process.returncode is not None:
                raise AssertionError(f"the gateway exited with {process.returncode}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not become healthy")


async def test_the_process_serves_forwards_and_stops_gracefully(
    generation: GenerationDouble, signer: Signer
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_gateway",
        env=_env(
            GATEWAY_HTTP_PORT=str(port),
            GENERATION_GRPC_TARGET=generation.target,
            REPLICATE_WEBHOOK_SECRET=SECRET,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        await _wait_healthy(base_url, process)
        body = b'{"id": "p1", "status": "processing"}'
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            ready = await client.get("/readyz")
            response = await client.post(
                "/api/v1/webhooks/replicate", content=body, headers=signer(body)
            )
            # A delivery still in flight when SIGTERM arrives is answered, not dropped.
            generation.servicer.mode = "slow"
            generation.servicer.slow_seconds = 0.5
            in_flight = asyncio.create_task(
                client.post("/api/v1/webhooks/replicate", content=body, headers=signer(body))
            )
            while len(generation.servicer.received) < 2:
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            drained = await in_flight
        assert ready.status_code == 200
        assert response.status_code == 200
        assert drained.status_code == 200
        assert [e.payload for e in generation.servicer.received] == [body, body]
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert b'"event": "gateway.stopped"' in stdout
    assert SECRET[6:].encode() not in stdout


def test_a_malformed_secret_stops_the_start_without_printing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_secret = "whsec_not*base64*secret"
    monkeypatch.setenv("REPLICATE_WEBHOOK_SECRET", bad_secret)
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert "REPLICATE_WEBHOOK_SECRET" in captured.err
    assert "not*base64" not in captured.out + captured.err


def test_the_entry_point_loads_no_database_library() -> None:
    # The gateway has no database; kit must not drag SQLAlchemy in.
    assert packages_loaded_by(["webhook_gateway.__main__"]) & DATABASE_PACKAGES == set()
