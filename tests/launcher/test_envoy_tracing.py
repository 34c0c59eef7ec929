"""Envoy's OpenTelemetry tracer: absent by default, accepted by Envoy when configured."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from launcher.envoy import ENVOY_CONFIG, load_config, write_local_config
from launcher.envoy_tracing import (
    COLLECTOR_CLUSTER,
    UNTRACED_ROUTES,
    TracingConfigError,
    with_tracing,
)
from testkit.envoy import running_envoy
from testkit.recorder import RecordingServer

PORTS = {"listener_port": 18180, "admin_port": 19911, "edge_port": 18181, "gateway_port": 18182}


def _manager(config: dict[str, object]) -> dict[str, object]:
    listeners = config["static_resources"]["listeners"]  # type: ignore[index]
    manager: dict[str, object] = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def test_without_a_collector_envoy_has_no_tracer() -> None:
    assert "tracing" not in ENVOY_CONFIG.read_text()
    assert "tracing" not in _manager(load_config())


def test_with_a_collector_the_tracer_and_its_cluster_pass_envoy_validate(
    tmp_path: Path,
) -> None:
    written = write_local_config(
        tmp_path / "envoy.yaml",
        otlp_traces_url="http://collector.local:4318/v1/traces",
        listener_port=PORTS["listener_port"],
        admin_port=PORTS["admin_port"],
        edge_port=PORTS["edge_port"],
        gateway_port=PORTS["gateway_port"],
    )
    config = yaml.safe_load(written.read_text())
    provider = _manager(config)["tracing"]["provider"]  # type: ignore[index]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    uri = provider["typed_config"]["http_service"]["http_uri"]
    assert uri == {
        "uri": "http://collector.local:4318/v1/traces",
        "cluster": COLLECTOR_CLUSTER,
        "timeout": "1s",
    }
    names = [cluster["name"] for cluster in config["static_resources"]["clusters"]]
    assert names[-1] == COLLECTOR_CLUSTER


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "http://"])
def test_an_endpoint_envoy_cannot_use_is_refused(endpoint: str) -> None:
    with pytest.raises(TracingConfigError):
        with_tracing(load_config(), endpoint)


def test_the_events_route_is_never_sampled_when_tracing_is_on() -> None:
    manager = _manager(with_tracing(load_config(), "http://collector.local:4318/v1/traces"))
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]  # type: ignore[index]
    untraced = {route["name"] for route in routes if "tracing" in route}
    assert untraced == set(UNTRACED_ROUTES) == {"job_events"}


def test_envoy_exports_urls_but_never_the_events_routes_token(tmp_path: Path) -> None:
    """A real Envoy exporting to a recording collector: an ordinary request's URL reaches
    the collector (so URLs are exported at all), the SSE token never does."""
    token, marker = "sse-token-must-not-leave", "exported-marker"
    with (
        RecordingServer("edge") as edge,
        RecordingServer("gateway") as gateway,
        RecordingServer("collector") as collector,
        running_envoy(
            tmp_path, edge.port, gateway.port, otlp_traces_url=f"{collector.url}/v1/traces"
        ) as envoy,
    ):
        job = uuid.uuid4()
        events = httpx.get(
            f"{envoy.url}/api/v1/generations/{job}/events?access_token={token}", timeout=10
        )
        assert events.status_code == 200
        assert httpx.get(f"{envoy.url}/api/v1/usage?{marker}=1", timeout=10).status_code == 200
        deadline = time.monotonic() + 20.0  # Envoy flushes its spans every 5 s
        while not any(marker.encode() in r.body for r in collector.snapshot()):
            assert time.monotonic() < deadline, "Envoy exported no span"
            time.sleep(0.1)
        assert all(token.encode() not in r.body for r in collector.snapshot())
        assert any(r.path.startswith("/api/v1/generations/") for r in edge.snapshot())


CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_CONTEXT = {
    "traceparent": f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01",
    "tracestate": "vendor=client",
    "baggage": "userEmail=alice%40example.com",
}


@pytest.mark.parametrize("tracing", [False, True])
def test_a_clients_trace_context_never_reaches_the_services(tmp_path: Path, tracing: bool) -> None:
    """Adopted, a client's sampled flag would choose what we trace (and pay for) and its
    baggage would ride our calls out, to Replicate too. A tracing Envoy starts a trace
    of its own instead of continuing the client's."""
    with (
        RecordingServer("edge") as edge,
        RecordingServer("gateway") as gateway,
        RecordingServer("collector") as collector,
        running_envoy(
            tmp_path,
            edge.port,
            gateway.port,
            otlp_traces_url=f"{collector.url}/v1/traces" if tracing else None,
        ) as envoy,
    ):
        answer = httpx.get(f"{envoy.url}/api/v1/usage", headers=CLIENT_CONTEXT, timeout=10)
        assert answer.status_code == 200
        [forwarded] = [r for r in edge.snapshot() if r.path == "/api/v1/usage"]
    headers = {name.lower(): value for name, value in forwarded.headers.items()}
    assert "baggage" not in headers
    assert "vendor=client" not in headers.get("tracestate", "")
    assert CLIENT_TRACE_ID not in headers.get("traceparent", "")
    assert ("traceparent" in headers) is tracing  # Envoy's own, when it traces
