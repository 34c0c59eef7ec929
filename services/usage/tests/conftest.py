"""Fixtures of the usage suite: a migrated database, a movable clock and a real
usage gRPC server on port 0, plus a small client that speaks to it.

One database and one server serve most tests; each test uses fresh user ids,
so tests never see each other's rows. Tests that read the whole ledger (the
audit, the migrations) make their own database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.grpc_errors import RemoteError, from_rpc_error
from kit.runtime_config import Plan, RuntimeConfig
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate

# Small plans keep the limits easy to reach.
FREE_MONTHLY = 5
BASIC_PRICE, BASIC_MONTHLY = "price_basic", 8
TEST_CONFIG = RuntimeConfig(
    plans={
        "free": Plan(name="free", monthly_generations=FREE_MONTHLY),
        BASIC_PRICE: Plan(name="basic", monthly_generations=BASIC_MONTHLY),
    },
    styles={},
    room_types={},
)
MID_OCTOBER = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)


class SettableClock:
    """A clock the test sets; the server reads it on every call."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


class UsageClient:
    """The usage RPCs with plain arguments; failures decode to RemoteError."""

    def __init__(self, channel: grpc.aio.Channel, target: str) -> None:
        self.stub = usage_pb2_grpc.UsageServiceStub(channel)
        self.target = target

    async def quota(self, owner: str, pending: Sequence[str] = ()) -> usage_pb2.Quota:
        request = usage_pb2.GetQuotaRequest(owner_id=owner, pending_job_ids=pending)
        return await self.stub.GetQuota(request, timeout=10)

    async def debit(self, owner: str, job: str, key: str | None = None) -> usage_pb2.LedgerResult:
        request = usage_pb2.DebitRequest(
            owner_id=owner, job_id=job, idempotency_key=key or f"debit:{job}", reason="generation"
        )
        return await self.stub.Debit(request, timeout=30)

    async def credit(self, owner: str, job: str, key: str | None = None) -> usage_pb2.LedgerResult:
        request = usage_pb2.CreditRequest(
            owner_id=owner, job_id=job, idempotency_key=key or f"credit:{job}", reason="job_failed"
        )
        return await self.stub.Credit(request, timeout=30)

    async def set_plan(self, owner: str, price_id: str) -> usage_pb2.Quota:
        request = usage_pb2.SetPlanRequest(owner_id=owner, price_id=price_id)
        return await self.stub.SetPlan(request, timeout=10)

    @staticmethod
    async def error_of(call: Awaitable[Any]) -> RemoteError:
        """Awaits a call that must fail and decodes its error."""
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return from_rpc_error(error)
        raise AssertionError("the call succeeded")


ServerFactory = Callable[..., AbstractAsyncContextManager[UsageClient]]


@asynccontextmanager
async def running_usage_server(
    database_url: str, clock: SettableClock, **env: Any
) -> AsyncIterator[UsageClient]:
    """A real usage server on a free port, stopped (gracefully) on exit."""
    settings = UsageSettings(
        **{
            "USAGE_DATABASE_URL": database_url,
            "USAGE_GRPC_PORT": 0,
            "GRPC_HOST": "127.0.0.1",
            "GENERATION_GRPC_TARGET": "127.0.0.1:1",
            **env,
        }
    )
    server, _ = build_server(settings, clock=clock, runtime_config=TEST_CONFIG)
    port = await server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield UsageClient(channel, target)
    finally:
        await channel.close()
        await server.stop(1)


@pytest.fixture(scope="session")
def server_factory() -> ServerFactory:
    """``async with server_factory(url, clock, **env) as client``."""
    return running_usage_server


@pytest.fixture(scope="session")
def new_id() -> Callable[[], str]:
    """Fresh UUID strings for users and jobs."""
    return lambda: str(uuid.uuid4())


@pytest.fixture(scope="session")
async def usage_db(database_factory: Callable[[str], str]) -> str:
    url = database_factory("usage")
    await migrate(url)
    return url


@pytest.fixture(scope="session")
async def usage_sql(usage_db: str) -> AsyncIterator[AsyncEngine]:
    """Direct SQL on the shared usage database, for what the RPCs cannot show."""
    engine = create_async_engine(usage_db)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def session_clock() -> SettableClock:
    return SettableClock(MID_OCTOBER)


@pytest.fixture
def clock(session_clock: SettableClock) -> Iterator[SettableClock]:
    """The shared server's clock, at mid-October 2026 when each test starts."""
    session_clock.current = MID_OCTOBER
    yield session_clock
    session_clock.current = MID_OCTOBER


@pytest.fixture(scope="session")
async def usage(usage_db: str, session_clock: SettableClock) -> AsyncIterator[UsageClient]:
    """A client of the shared usage server."""
    async with running_usage_server(usage_db, session_clock) as client:
        yield client


async def _count_entries(engine: AsyncEngine, job: str, kind: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT count(*) FROM usage_ledger WHERE job_id = :job AND kind = :kind"),
            {"job": job, "kind": kind},
        )
        return int(result.scalar_one())


@pytest.fixture(scope="session")
def count_entries() -> Callable[[AsyncEngine, str, str], Awaitable[int]]:
    """``await count_entries(engine, job_id, kind)``: how many rows the job has."""
    return _count_entries


@pytest.fixture(scope="session")
def plans() -> dict[str, Plan]:
    """The test plans: ``free`` (5 a month) and ``price_basic`` (8 a month)."""
    return dict(TEST_CONFIG.plans)
