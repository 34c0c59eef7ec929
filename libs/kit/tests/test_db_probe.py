"""The readiness probe's own connection: real PostgreSQL, and a peer that never answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from kit.db import DatabaseProbe, asyncpg_connect_args


class _FreezableProxy:
    """Relays TCP to the database until frozen: then nothing passes, sockets stay open."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self.flowing.wait()
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        for task in (
            asyncio.create_task(pipe(reader, upstream_writer)),
            asyncio.create_task(pipe(upstream_reader, writer)),
        ):
            self._tasks.add(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _cut_short(probe: DatabaseProbe) -> None:
    """A check the server's 0.3 s limit ends: at once, its connection dropped."""
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await probe()
    assert time.monotonic() - began < 1.0
    assert probe._connection is None


async def test_the_probe_answers_on_a_connection_it_keeps(
    database_factory: Callable[[str], str],
) -> None:
    probe = DatabaseProbe(database_factory("kit_probe"), "kit-probe-test")
    try:
        assert await probe()
        first = probe._connection
        assert await probe()
        assert probe._connection is first  # one connection, kept between checks
    finally:
        await probe.close()
    assert first is not None
    assert first.is_closed()


async def test_a_frozen_database_fails_the_check_at_its_limit_and_a_thawed_one_passes(
    database_factory: Callable[[str], str],
) -> None:
    """Cancelled by the server's time limit mid-query, the probe drops its connection at
    once (no polite close waiting on the frozen peer); the next check connects again."""
    url = make_url(database_factory("kit_probe_frozen"))
    assert url.host is not None
    assert url.port is not None
    proxy = _FreezableProxy(url.host, url.port)
    proxied = url.set(host="127.0.0.1", port=await proxy.start()).render_as_string(False)
    probe = DatabaseProbe(proxied, "kit-probe-test")
    try:
        assert await probe()
        proxy.flowing.clear()
        await _cut_short(probe)
        proxy.flowing.set()
        assert await probe()
    finally:
        await probe.close()
        await proxy.close()


async def test_a_probe_cut_short_by_its_time_limit_waits_for_nothing() -> None:
    """A database that accepts the connection and then says nothing (frozen, or a
    half-open link): the server's limit ends the check at once, with no close that
    would wait on the silent peer, and the next check starts over."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = DatabaseProbe(f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none", "kit-probe-test")
    try:
        for _ in range(2):
            await _cut_short(probe)
        assert len(accepted) == 2
    finally:
        await probe.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_the_urls_query_means_what_it_means_to_the_engine(
    database_factory: Callable[[str], str],
) -> None:
    """Deployed URLs end in ``?ssl=verify-full``: asyncpg's own ``ssl`` as the engine
    passes it, not a server setting (which the server refuses: every check would fail).
    Here ``ssl=disable`` (the test server has no TLS); options of SQLAlchemy's dialect
    alone are left out."""
    url = make_url(database_factory("kit_probe_query")).update_query_dict(
        {"ssl": "disable", "prepared_statement_cache_size": "0"}
    )
    raw = url.render_as_string(hide_password=False)
    assert asyncpg_connect_args(raw)["ssl"] == "disable"
    assert "prepared_statement_cache_size" not in asyncpg_connect_args(raw)
    probe = DatabaseProbe(raw, "kit-probe-test")
    try:
        assert await probe()
    finally:
        await probe.close()


async def test_a_probe_closed_while_it_connects_keeps_no_connection(
    database_factory: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = DatabaseProbe(database_factory("kit_probe_race"), "kit-probe-test")
    connect = asyncpg.connect
    opened: list[asyncpg.Connection] = []

    async def slow_connect(**kwargs: Any) -> asyncpg.Connection:
        await asyncio.sleep(0.2)
        connection = await connect(**kwargs)
        opened.append(connection)
        return connection

    monkeypatch.setattr(asyncpg, "connect", slow_connect)
    check = asyncio.ensure_future(probe())
    await asyncio.sleep(0.05)
    await probe.close()
    with pytest.raises(ConnectionError):
        await check
    with pytest.raises(ConnectionError):
        await probe()  # closed for good
    assert len(opened) == 1
    assert opened[0].is_closed()
