"""Per-rpc metrics through a real kit GrpcServer on port 0, and the exporter thread."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from kit.errors import NotFound
from kit.metrics import start_metrics_server
from launcher.components import free_port
from testkit.grpc_serving import serving
from tests.metrics.helpers import Scrape, local_scrape, local_scrape_until

SERVICE = "kit.metricstest.Probe"
HANDLED = "grpc_server_handled_total"
SECONDS_COUNT = "grpc_server_handling_seconds_count"


async def _call(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Answers, refuses with a domain error, or fails unexpectedly."""
    if request == b"missing":
        raise NotFound()
    if request == b"boom":
        raise RuntimeError("unexpected")
    return request


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    # A service of its own, so no other in-process server touches its series.
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_call)
    async with serving(SERVICE, {"Call": handler}) as channel:
        yield channel


async def _probe(channel: grpc.aio.Channel, request: bytes) -> bytes:
    # The stubs cannot infer the message types of a method without (de)serializers: raw bytes.
    call = cast(
        "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]", channel.unary_unary(f"/{SERVICE}/Call")
    )
    answer: bytes = await call(request, timeout=5)
    return answer


def _handled(scrape: Scrape, code: str) -> float:
    return scrape.value(HANDLED, grpc_service=SERVICE, grpc_method="Call", grpc_code=code)


async def test_each_rpc_is_counted_by_method_and_final_code(channel: grpc.aio.Channel) -> None:
    before = local_scrape()
    assert await _probe(channel, b"hello") == b"hello"
    for request, code in (
        (b"missing", grpc.StatusCode.NOT_FOUND),
        (b"boom", grpc.StatusCode.INTERNAL),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await _probe(channel, request)
        assert failure.value.code() == code
    codes = ("OK", "NOT_FOUND", "INTERNAL")
    after = await local_scrape_until(
        lambda now: all(_handled(now, code) - _handled(before, code) == 1 for code in codes)
    )
    for label in codes:
        assert _handled(after, label) - _handled(before, label) == 1, label
    latency = {"grpc_service": SERVICE, "grpc_method": "Call"}
    assert after.value(SECONDS_COUNT, **latency) - before.value(SECONDS_COUNT, **latency) == 3
    assert after.value("grpc_server_handling_seconds_sum", **latency) > before.value(
        "grpc_server_handling_seconds_sum", **latency
    )


async def test_health_checks_are_not_counted(channel: grpc.aio.Channel) -> None:
    before = local_scrape()
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    after = local_scrape()
    assert after.total(HANDLED, grpc_service="grpc.health.v1.Health") == 0
    assert after.total(HANDLED, grpc_service=SERVICE) == before.total(HANDLED, grpc_service=SERVICE)


async def test_exporter_serves_the_default_registry(channel: grpc.aio.Channel) -> None:
    await _probe(channel, b"hello")
    exporter = start_metrics_server(free_port(), "127.0.0.1")
    assert exporter is not None
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{exporter.port}/metrics")
        assert response.status_code == 200
        scrape = Scrape.parse(response.text)
        assert _handled(scrape, "OK") >= 1
        assert scrape.families["grpc_server_handling_seconds"] == "histogram"
    finally:
        exporter.close()
    with socket.socket() as again:  # close() released the port (no listener left on it)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", exporter.port))


def test_port_zero_turns_the_exporter_off() -> None:
    assert start_metrics_server(0) is None


def test_a_port_in_use_is_logged_and_the_service_runs_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with capture_logs() as logs:
            assert start_metrics_server(port, "127.0.0.1") is None
    assert [line["event"] for line in logs] == ["metrics.unavailable"]
    assert logs[0]["port"] == port
