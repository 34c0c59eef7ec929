"""Envoy's OpenTelemetry tracer: absent by default, accepted by Envoy when configured."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.envoy import ENVOY_CONFIG, load_config, write_local_config
from launcher.envoy_tracing import COLLECTOR_CLUSTER, TracingConfigError, with_tracing

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
        tmp_path / "envoy.yaml", otlp_endpoint="http://collector.local:4318", **PORTS
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
