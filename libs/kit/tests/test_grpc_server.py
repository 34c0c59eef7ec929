"""The gRPC bootstrap through a real server on port 0: errors, request ids, health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.db import UNAVAILABLE_ERRORS
from kit.errors import LimitExceeded, NotFound
from kit.grpc_client import create_channel
from kit.grpc_errors import from_rpc_error
from kit.grpc_server import GrpcServer, ServiceBinding
from kit.wire import FEED_STREAM_SECONDS

SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Servicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.contexts: list[dict[str, Any]] = []

    async def GetQuota(
        self, request: usage_pb2.GetQuotaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> usage_pb2.Quota:
        metadata = dict(context.invocation_metadata() or ())
        self.request_ids.append(str(metadata.get("x-request-id", "")))
        self.contexts.append(structlog.contextvars.get_contextvars())
        if request.owner_id == "missing":
            raise NotFound("No such user.")
        if request.owner_id == "empty":
            raise LimitExceeded(periodEnd="2026-12-01T00:00:00Z")
        if request.owner_id == "db-down":
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        if request.owner_id == "boom":
            raise RuntimeError("secret internal detail")
        return usage_pb2.Quota(plan="free", remaining=3)


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, _Servicer, grpc.aio.Channel]]:
    servicer = _Servicer()  # type: ignore[abstract]  # the rpcs it leaves out stay UNIMPLEMENTED
    server = GrpcServer(
        [
            ServiceBinding(
                SERVICE, lambda s: usage_pb2_grpc.add_UsageServiceServicer_to_server(servicer, s)
            )
        ],
        host="127.0.0.1",
        port=0,
        max_message_bytes=1024 * 1024,
        unavailable_errors=UNAVAILABLE_ERRORS,
    )
    port = await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    yield server, servicer, channel
    await channel.close()
    await server.stop(0)


async def test_domain_errors_carry_the_normalized_code(served: Any) -> None:
    _, _, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="empty"), timeout=5)
    remote = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (remote.code, remote.reason) == ("LIMIT_EXCEEDED", "LIMIT_EXCEEDED")
    assert remote.details == {"periodEnd": "2026-12-01T00:00:00Z"}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="missing"), timeout=5)
    assert from_rpc_error(caught.value).code == "NOT_FOUND"


async def test_the_wire_carries_the_reason_and_details_only(served: Any) -> None:
    # The HTTP status is the edge's business: no httpStatus (or any other key of ours).
    _, _, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="empty"), timeout=5)
    infos = _error_infos(caught.value)
    assert [(info.reason, info.domain) for info in infos] == [("LIMIT_EXCEEDED", "interior")]
    assert dict(infos[0].metadata) == {"periodEnd": "2026-12-01T00:00:00Z"}


def _error_infos(error: grpc.aio.AioRpcError) -> list[error_details_pb2.ErrorInfo]:
    status = rpc_status.from_call(error)
    assert status is not None
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        assert detail.Unpack(info)
        infos.append(info)
    return infos


async def test_unexpected_errors_become_internal_without_details(served: Any) -> None:
    _, _, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="boom"), timeout=5)
    remote = from_rpc_error(caught.value)
    assert (remote.code, remote.reason) == ("INTERNAL_ERROR", "INTERNAL_ERROR")
    assert "secret" not in (caught.value.details() or "")


async def test_request_id_reaches_the_servicer(served: Any) -> None:
    _, servicer, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    await stub.GetQuota(
        usage_pb2.GetQuotaRequest(owner_id="u"), timeout=5, metadata=(("x-request-id", "req-1"),)
    )
    assert servicer.request_ids == ["req-1"]


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("req-1.a_B", "req-1.a_B"), ("has space", None), ("x" * 65, None), ('q"}', None)],
)
async def test_calls_log_a_request_id_of_ours_beside_a_well_formed_callers(
    served: Any, incoming: str, kept: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    _, servicer, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    await stub.GetQuota(
        usage_pb2.GetQuotaRequest(owner_id="u"), timeout=5, metadata=(("x-request-id", incoming),)
    )
    [bound] = servicer.contexts
    [finished] = [
        event
        for event in map(json.loads, capsys.readouterr().out.splitlines())
        if event["event"] == "rpc.finished"
    ]

    for fields in (bound, finished):
        assert len(fields["requestId"]) == 32
        assert fields["requestId"] != incoming
        assert fields.get("clientRequestId") == kept


async def test_health_serving_then_not_serving_on_stop(served: Any) -> None:
    server, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await server.health.enter_graceful_shutdown()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_unreachable_service_is_a_generic_upstream_error() -> None:
    channel = create_channel("127.0.0.1:1")
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="u"), timeout=1)
    await channel.close()
    remote = from_rpc_error(caught.value)
    assert remote.code == "UPSTREAM_ERROR"
    assert remote.reason == "SERVICE_UNAVAILABLE"


async def test_an_unreachable_database_is_a_retryable_503(served: Any) -> None:
    _, _, channel = served
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuota(usage_pb2.GetQuotaRequest(owner_id="db-down"), timeout=5)
    remote = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (remote.code, remote.reason) == ("UPSTREAM_ERROR", "SERVICE_UNAVAILABLE")
    assert "SELECT" not in (caught.value.details() or "")


def _checked_server(check: Callable[[], Awaitable[bool]], interval: float) -> GrpcServer:
    return GrpcServer(
        [ServiceBinding(SERVICE, lambda s: None)],
        host="127.0.0.1",
        port=0,
        max_message_bytes=1024 * 1024,
        readiness=check,
        readiness_interval=interval,
    )


@asynccontextmanager
async def _health_of(
    check: Callable[[], Awaitable[bool]], interval: float = 5.0
) -> AsyncIterator[Callable[[], Awaitable[tuple[int, int]]]]:
    """A server with the readiness ``check``; yields a reader of its (overall, named)
    health statuses."""
    server = _checked_server(check, interval)
    port = await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def statuses() -> tuple[int, int]:
        overall, named = [
            (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
            for name in ("", SERVICE)
        ]
        return overall, named

    try:
        yield statuses
    finally:
        await channel.close()
        await server.stop(0)


async def test_named_services_follow_the_readiness_check_and_the_process_stays_serving() -> None:
    """A readiness check (a service's database) moves the named services between
    SERVING and NOT_SERVING; the overall status (liveness) stays SERVING throughout,
    and a check that raises or hangs counts as not ready."""
    answers: list[object] = [True]

    async def check() -> bool:
        answer = answers[-1]
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.sleep(60)
        return bool(answer)

    async with _health_of(check, interval=0.1) as statuses:
        assert await statuses() == (SERVING, SERVING)
        for answer in (False, True, OperationalError("SELECT 1", {}, OSError()), True, "hang"):
            answers.append(answer)
            named = SERVING if answer is True else NOT_SERVING
            async with asyncio.timeout(5):
                while (await statuses())[1] != named:
                    await asyncio.sleep(0.02)
            assert (await statuses())[0] == SERVING


async def test_a_service_whose_check_fails_at_start_starts_not_ready() -> None:
    async def check() -> bool:
        raise ConnectionRefusedError

    async with _health_of(check) as statuses:
        assert await statuses() == (SERVING, NOT_SERVING)


async def test_a_stop_during_the_first_readiness_check_leaves_no_check_running() -> None:
    """``start`` runs the first check itself; a ``stop`` that comes meanwhile (a signal
    during a slow database) must not leave the follower started after it."""
    checking, release = asyncio.Event(), asyncio.Event()
    checks = 0

    async def check() -> bool:
        nonlocal checks
        checks += 1
        checking.set()
        await release.wait()
        return True

    server = _checked_server(check, interval=0.1)
    starting = asyncio.create_task(server.start())
    await checking.wait()
    await server.stop(0)
    release.set()
    await starting
    await asyncio.sleep(0.3)  # three intervals: a follower would have checked again
    assert checks == 1
    assert server._readiness_task is None


def test_a_retired_connection_lets_a_change_feed_stream_run_to_its_own_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Servers retire their connections every 5 minutes (new replicas get their share);
    what runs on one is cancelled after the age's grace. That was 30 s, so the edge's
    WatchJobs stream (renewed every FEED_STREAM_SECONDS) ended UNAVAILABLE every ~5
    minutes, its settled views dropped and every watcher woken each time."""
    seen: dict[str, Any] = {}
    real = grpc.aio.server

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen.update(dict(kwargs.get("options", [])))
        return real(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", capture)
    GrpcServer([], host="127.0.0.1", port=0, max_message_bytes=1 << 20)

    assert seen["grpc.max_connection_age_ms"] == 5 * 60 * 1000
    assert seen["grpc.max_connection_age_grace_ms"] >= FEED_STREAM_SECONDS * 1000
