"""Database engine, the per-call transaction scope, and Alembic at start.

The transaction boundary is the RPC (or the background task): a session scope
commits when the block succeeds and rolls back when it raises. Repositories are
built from the session and never commit. Reads that need no transaction use
``read_scope``: autocommit, so a single SELECT is a single round trip.

Pooled connections are checked without a round trip: SQLAlchemy's ``pool_pre_ping``
costs three (BEGIN, ping, ROLLBACK with asyncpg) on every checkout, more than the
queries of a typical call. Instead a connection the server closed (a restart, an
idle timeout) is known to asyncpg at once and is replaced on checkout, and a
connection idle for longer than ``IDLE_PING_SECONDS`` (where a silently dropped
TCP link could hide) is pinged before use.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from sqlalchemy import MetaData, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from kit.settings import DatabaseSettings
from kit.tracing import instrument_engine

if TYPE_CHECKING:
    from alembic.config import Config

# A service's unit of work: the stores of one session (see store_opener).
StoresT = TypeVar("StoresT")

# The database cannot be reached now (connection refused or lost, pool timeout):
# a retryable UNAVAILABLE, not a bug. Passed to kit.grpc_server.GrpcServer by the
# services with a database, so the services without one never import SQLAlchemy.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)

# Stable constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def naming_metadata() -> MetaData:
    """A fresh MetaData with the project's naming convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)


# A connection unused for longer than this is pinged when it is checked out.
IDLE_PING_SECONDS = 10.0
_IDLE_SINCE = "kit_idle_since"


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """A pooled asyncpg engine with bounded pool and statement timeout.

    ``hide_parameters``: statement parameters (a prompt, an idempotency key) never
    appear in an exception message or a log line. TLS options in the URL's query
    (``?ssl=verify-full``) reach asyncpg unchanged.
    """
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        hide_parameters=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={
            "timeout": 10,
            "command_timeout": settings.db_statement_timeout_ms / 1000,
            "server_settings": {"statement_timeout": str(settings.db_statement_timeout_ms)},
        },
    )
    event.listen(engine.sync_engine, "checkin", _on_checkin)
    event.listen(engine.sync_engine, "checkout", _on_checkout)
    instrument_engine(engine.sync_engine)
    return engine


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Replace a dead connection; the pool then retries with a fresh one."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")
    idle_since = record.info.get(_IDLE_SINCE)
    if idle_since is not None and time.monotonic() - idle_since > IDLE_PING_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc


def asyncpg_connect_args(database_url: str) -> dict[str, Any]:
    """What ``asyncpg.connect`` needs to reach the database the engine reaches.

    Built as SQLAlchemy's asyncpg dialect builds them, so the URL's query means the same
    on a direct connection (``?ssl=verify-full`` is asyncpg's ``ssl``, not a server
    setting the server refuses); options of the dialect alone are left out.
    """
    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    _, params = url.get_dialect()().create_connect_args(url)
    accepted = inspect.signature(asyncpg.connect).parameters
    return {name: value for name, value in params.items() if name in accepted}


class DatabaseProbe:
    """A readiness check (kit.grpc_server): ``SELECT 1`` on a connection of its own.

    Not through the service's pool: a pool busy with requests is not a database out
    of reach, and a check waiting for a pooled connection would say it is. The
    connection is kept between checks; one that fails (or is cancelled by the
    server's time limit) is dropped at once, without the polite close that could
    wait on a frozen peer, and the next check connects again.
    """

    def __init__(self, database_url: str, application_name: str) -> None:
        self._connect_args = asyncpg_connect_args(database_url)
        self._settings = {"application_name": application_name}
        self._connection: asyncpg.Connection | None = None
        self._closed = False

    async def __call__(self) -> bool:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await self._connect()
            await self._connection.fetchval("SELECT 1")
        except BaseException:
            self._drop()
            raise
        return True

    async def _connect(self) -> asyncpg.Connection:
        if self._closed:
            raise ConnectionError("the probe is closed")
        connection = await asyncpg.connect(**self._connect_args, server_settings=self._settings)
        if self._closed:  # closed while connecting: nobody would close this one
            connection.terminate()
            raise ConnectionError("the probe is closed")
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        """Close the probe's connection, and any a check is opening (the service's
        cleanup); later checks fail."""
        self._closed = True
        self._drop()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session


def store_opener(
    sessions: async_sessionmaker[AsyncSession],
    stores: Callable[[AsyncSession], StoresT],
    *,
    transaction: bool,
) -> Callable[[], AbstractAsyncContextManager[StoresT]]:
    """Opens ``stores(session)`` for a domain's unit of work.

    ``transaction``: in one transaction (commit on success, roll back on error, as
    :func:`session_scope`); otherwise on a bare session, for autocommit sessionmakers
    (:func:`create_read_sessionmaker`) whose statements are each their own transaction.
    """

    @asynccontextmanager
    async def open_stores() -> AsyncIterator[StoresT]:
        if transaction:
            async with session_scope(sessions) as session:
                yield stores(session)
        else:
            async with sessions() as session:
                yield stores(session)

    return open_stores


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions in autocommit on the same pool: no BEGIN/COMMIT round trips.

    For reads whose statements need no common snapshot (one SELECT, or several whose
    answers may come from different moments), and for a write that is one statement
    (usage's debit). Never for several writes that must commit together.
    """
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


class SchemaAhead(Exception):
    """The database is at a revision this release does not know: a later release's."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"the database is at revision {revision}, later than this release's")
        self.revision = revision


class SchemaBehind(Exception):
    """The database is behind this release's migrations (``check-schema``)."""

    def __init__(self, stored: list[str], heads: list[str]) -> None:
        at = ", ".join(stored) or "no revision"
        super().__init__(f"the database is at {at}; this release needs {', '.join(heads)}")
        self.stored = stored
        self.heads = heads


def _alembic_config(script_location: Path, database_url: str) -> Config:
    from alembic.config import Config  # imported when used: see run_migrations

    config = Config()
    config.set_main_option("script_location", str(script_location))
    # ConfigParser interpolation treats % specially.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def run_migrations(
    script_location: Path, database_url: str, *, check_only: bool = False
) -> None:
    """``alembic upgrade head``; safe to run twice and from several processes.

    The migration environment takes a PostgreSQL advisory lock so that two
    instances starting at once do not race. Raises SchemaAhead (nothing done) for a
    database a later release migrated; ``check_only``: changes nothing, and raises
    SchemaBehind unless the database is at this release's head (see kit.migrations).

    Alembic is imported here, not with this module: it (with Mako and its
    autogenerate machinery) is 11 MiB of memory a process holds for its whole life,
    and a service that does not migrate at start (``RUN_MIGRATIONS=false``, as
    deployed: a one-shot ``migrate`` step runs first) never needs it.
    """
    from alembic import command

    config = _alembic_config(script_location, database_url)
    config.attributes["check_only"] = check_only
    await asyncio.to_thread(command.upgrade, config, "head")
