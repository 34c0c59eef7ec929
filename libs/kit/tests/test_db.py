"""The engine's pool: dead connections are replaced without a ping round trip on
every checkout, and read sessions run without BEGIN/COMMIT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from kit import db
from kit.settings import DatabaseSettings


@pytest.fixture
async def engine(database_factory: Callable[[str], str]) -> AsyncIterator[AsyncEngine]:
    settings = DatabaseSettings.model_validate(
        {"DATABASE_URL": database_factory("kitdb"), "DB_POOL_SIZE": 2, "DB_MAX_OVERFLOW": 0}
    )
    engine = db.create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_connections_killed_by_the_server_are_replaced_on_checkout(
    engine: AsyncEngine,
) -> None:
    # Two pooled connections, both idle in the pool.
    async with engine.connect() as first, engine.connect() as second:
        pids = [
            await first.scalar(text("SELECT pg_backend_pid()")),
            await second.scalar(text("SELECT pg_backend_pid()")),
        ]
    # What a server restart does to them: terminated from the server side.
    killer = db.create_engine(
        DatabaseSettings.model_validate({"DATABASE_URL": engine.url.render_as_string(False)})
    )
    try:
        async with killer.connect() as conn:
            for pid in pids:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()
    await asyncio.sleep(0.3)  # the loop reads the servers' goodbyes
    async with engine.connect() as first, engine.connect() as second:
        assert await first.scalar(text("SELECT 1")) == 1
        assert await second.scalar(text("SELECT 1")) == 1
        fresh = {await first.scalar(text("SELECT pg_backend_pid()"))}
    assert fresh.isdisjoint(pids)


async def test_a_busy_pool_sends_no_ping(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = type(await _raw(engine))
    pings: list[object] = []
    monkeypatch.setattr(adapter, "ping", lambda self: pings.append(self))
    for _ in range(5):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 2"))
    assert pings == []


async def test_a_long_idle_connection_is_pinged_and_replaced_when_dead(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    pinged: list[bool] = []
    original_ping = type(await _raw(engine)).ping

    def failing_ping(self: object) -> None:
        pinged.append(True)
        raise ConnectionError("link silently dropped")

    monkeypatch.setattr(db, "IDLE_PING_SECONDS", -1.0)
    monkeypatch.setattr(type(await _raw(engine)), "ping", failing_ping)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 3")) == 3
    finally:
        monkeypatch.setattr(type(await _raw(engine)), "ping", original_ping)
    assert pinged, "an idle connection must be pinged before use"


async def _raw(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return raw.dbapi_connection


async def test_read_sessions_open_no_transaction(engine: AsyncEngine) -> None:
    readers = db.create_read_sessionmaker(engine)
    writers = db.create_sessionmaker(engine)
    async with readers() as session:
        await session.execute(text("SELECT 1"))
        raw = await (await session.connection()).get_raw_connection()
        # asyncpg's adapter starts no transaction (no BEGIN round trip) in autocommit.
        assert raw.dbapi_connection._transaction is None  # type: ignore[union-attr]
    async with db.session_scope(writers) as session:
        await session.execute(text("SELECT 1"))
        raw = await (await session.connection()).get_raw_connection()
        assert raw.dbapi_connection._transaction is not None  # type: ignore[union-attr]
    # The pool hands the same connection back to writers with transactions again.
    async with db.session_scope(writers) as session:
        await session.execute(text("SELECT 1"))
        raw = await (await session.connection()).get_raw_connection()
        assert raw.dbapi_connection._transaction is not None  # type: ignore[union-attr]


async def test_statement_parameters_never_reach_an_error_message(engine: AsyncEngine) -> None:
    """A failing statement's parameters (a prompt) stay out of the exception text,
    which is what a traceback in a log line would print."""
    marker = "Quokka prompt 7f3a"
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT length(CAST(:prompt AS text)) / 0"), {"prompt": marker})
    assert marker not in str(caught.value)
    assert "hidden" in str(caught.value)


async def test_a_verify_full_url_makes_the_driver_insist_on_tls(
    database_factory: Callable[[str], str],
) -> None:
    """``?ssl=verify-full`` reaches asyncpg: it wants a CA to verify the test server
    (which has none), so it refuses to connect instead of falling back to plain text."""
    url = database_factory("kitdbtls") + "?ssl=verify-full"
    engine = db.create_engine(DatabaseSettings.model_validate({"DATABASE_URL": url}))
    try:
        _, options = engine.dialect.create_connect_args(engine.url)
        assert options["ssl"] == "verify-full"
        with pytest.raises((DBAPIError, ConnectionError, OSError)) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        # No CA bundle here, or a server without TLS: either way no plain-text session.
        message = str(caught.value).lower()
        assert "ssl" in message or "certificate" in message
    finally:
        await engine.dispose()
