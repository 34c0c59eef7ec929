"""The testkit's one way to serve an app: it starts, says where, and fails loudly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from testkit.recorder import RecordingServer
from testkit.servers import ThreadedUvicorn, serve_in_loop


def _app() -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"port {request.url.port}")

    return Starlette(routes=[Route("/", hello)])


@asynccontextmanager
async def _broken(_: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("lifespan fails")
    yield  # pragma: no cover


def test_a_threaded_app_is_served_on_the_port_its_factory_was_given() -> None:
    given: list[int] = []

    def factory(port: int) -> Starlette:
        given.append(port)
        return _app()

    with ThreadedUvicorn(factory=factory, name="factory") as server:
        answer = httpx.get(server.base_url, trust_env=False)
    assert given == [server.port]
    assert answer.text == f"port {server.port}"


def test_a_threaded_app_whose_startup_fails_raises() -> None:
    with pytest.raises(RuntimeError, match="broken did not start"):
        ThreadedUvicorn(Starlette(lifespan=_broken), name="broken").start()


async def test_an_in_loop_app_is_served_and_a_failed_startup_raises() -> None:
    async with serve_in_loop(_app()) as base_url, httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(base_url)).status_code == 200
    with pytest.raises(RuntimeError, match="did not start"):
        async with serve_in_loop(Starlette(lifespan=_broken)):
            pass  # pragma: no cover


def test_the_recording_server_answers_as_scripted_and_wakes_waiters() -> None:
    with RecordingServer("hooks", body={"ok": True}, path="/hooks") as server:
        server.statuses = [503, 302]
        with httpx.Client(trust_env=False) as client:
            codes = [client.post(server.url, content=b"x").status_code for _ in range(3)]
            last = client.get(f"{server.url}?a=1")
        received = server.wait_for(4, timeout=5)
    assert codes == [503, 302, 200]
    assert last.json() == {"ok": True}
    assert [r.path for r in received] == ["/hooks"] * 3 + ["/hooks?a=1"]
    assert received[0].body == b"x"
    with pytest.raises(AssertionError, match="expected 5 requests, got 4"):
        server.wait_for(5, timeout=0.1)
