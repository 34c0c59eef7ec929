"""The one Envoy config: Envoy accepts it, and the local rewrite touches only addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_api.settings import EdgeSettings
from launcher.components import free_port
from launcher.envoy import (
    ENVOY_CONFIG,
    EnvoyConfigError,
    load_config,
    rewrite_for_local,
    validate,
    write_local_config,
)
from testkit.envoy import running_envoy
from webhook_gateway.settings import GatewaySettings


def _leaf_differences(a: Any, b: Any, path: str = "") -> set[str]:
    """Paths (a.b[0].c) where two YAML documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs: set[str] = set()
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                diffs.add(f"{path}.{key}")
            else:
                diffs |= _leaf_differences(a[key], b[key], f"{path}.{key}")
        return diffs
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return {path}
        diffs = set()
        for index, (left, right) in enumerate(zip(a, b, strict=True)):
            diffs |= _leaf_differences(left, right, f"{path}[{index}]")
        return diffs
    return set() if a == b else {path}


def _route_config(config: dict[str, Any]) -> Any:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return hcm["typed_config"]["route_config"]


def test_the_deploy_config_passes_envoy_validate() -> None:
    validate(ENVOY_CONFIG)


def test_the_local_rewrite_passes_validate_and_changes_only_ports_and_upstreams(
    tmp_path: Path,
) -> None:
    written = write_local_config(
        tmp_path / "envoy.yaml", listener_port=18080, admin_port=19901, edge_port=18081,
        gateway_port=18082,
    )  # fmt: skip
    original = load_config()
    local = yaml.safe_load(written.read_text())

    assert _route_config(local) == _route_config(original)
    endpoint = "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address"
    assert _leaf_differences(original, local) == {
        ".admin.address.socket_address.port_value",
        ".static_resources.listeners[0].address.socket_address.port_value",
        # Loopback: development accepts tokens signed with the published dev secret.
        ".static_resources.listeners[0].address.socket_address.address",
        f".static_resources.clusters[0].{endpoint}.address",
        f".static_resources.clusters[0].{endpoint}.port_value",
        f".static_resources.clusters[1].{endpoint}.address",
        f".static_resources.clusters[1].{endpoint}.port_value",
        # The stats listener: any free port, on loopback, reaching this admin port.
        ".static_resources.listeners[1].address.socket_address.port_value",
        ".static_resources.listeners[1].address.socket_address.address",
        f".static_resources.clusters[2].{endpoint}.port_value",
    }
    assert local["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == (
        "127.0.0.1"
    )
    clusters = {c["name"]: c for c in local["static_resources"]["clusters"]}
    edge = clusters["edge_api"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert edge["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18081,
    }


def test_the_deploy_config_targets_the_deployment_hostnames() -> None:
    clusters = {c["name"]: c for c in load_config()["static_resources"]["clusters"]}
    addresses = {
        name: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]
        for name, cluster in clusters.items()
    }
    assert addresses == {
        "edge_api": {"address": "edge-api", "port_value": 8081},
        "webhook_gateway": {"address": "webhook-gateway", "port_value": 8082},
        # The stats listener's one route, to the admin interface on loopback.
        "envoy_admin": {"address": "127.0.0.1", "port_value": 9901},
    }
    assert clusters["envoy_admin"]["type"] == "STATIC"
    services = [c for name, c in clusters.items() if name != "envoy_admin"]
    assert all(c["type"] == "STRICT_DNS" for c in services)


def test_validate_reports_what_envoy_rejects(tmp_path: Path) -> None:
    config = load_config()
    routes = _route_config(config)["virtual_hosts"][0]["routes"]
    routes[0]["route"]["cluster"] = "no_such_cluster"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))

    with pytest.raises(EnvoyConfigError, match="no_such_cluster"):
        validate(broken)


def test_the_rewrite_refuses_a_config_of_another_shape() -> None:
    with pytest.raises(EnvoyConfigError, match="unexpected Envoy config shape"):
        rewrite_for_local(
            {"admin": {}}, listener_port=1, admin_port=2, upstreams={"edge_api": ("h", 3)}
        )


def test_envoys_cors_exposes_what_the_edge_does() -> None:
    from edge_api.cors import EXPOSED_HEADERS
    from launcher.envoy import CORS_EXPOSED_HEADERS

    assert CORS_EXPOSED_HEADERS == EXPOSED_HEADERS


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def _routes() -> dict[str, Any]:
    routes = _route_config(load_config())["virtual_hosts"][0]["routes"]
    return {route["name"]: route for route in routes}


def _field_default(model: Any, name: str) -> float:
    return float(model.model_fields[name].default)


def test_envoy_waits_longer_than_the_services_it_fronts() -> None:
    """Each of Envoy's limits sits above the service deadline it fronts, so the service
    answers (its own error, counted in its metrics) before Envoy gives up with a 503
    for work that may still complete: a submission's answer comes up to the edge's
    submit deadline after the body's last byte (the listener's idle limit is 30 s), a
    slow upload is the edge's to cut off, and a webhook's the gateway's to answer."""
    hcm = load_config()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    manager = hcm["typed_config"]
    routes = _routes()
    submit_deadline = _field_default(EdgeSettings, "grpc_submit_deadline_seconds")
    assert _seconds(routes["upload"]["route"]["idle_timeout"]) > submit_deadline
    assert _seconds(routes["upload"]["route"]["timeout"]) > submit_deadline
    read_timeout = _field_default(EdgeSettings, "upload_read_timeout_seconds")
    assert _seconds(manager["request_timeout"]) > read_timeout
    gateway_deadline = _field_default(GatewaySettings, "grpc_deadline_seconds")
    assert _seconds(routes["webhook"]["route"]["timeout"]) > gateway_deadline


def test_a_render_read_slowly_is_not_cut_mid_file() -> None:
    """A route's timeout covers streaming the whole answer: renders have none, only an
    idle limit."""
    route = _routes()["public_renders"]["route"]
    assert _seconds(route["timeout"]) == 0
    assert _seconds(route["idle_timeout"]) > 0


def test_envoys_own_408_says_request_timeout_as_the_edges_does() -> None:
    hcm = load_config()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    mappers = hcm["typed_config"]["local_reply_config"]["mappers"]
    codes = {
        mapper["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: mapper
        for mapper in mappers
        if mapper["filter"]["status_code_filter"]["comparison"]["op"] == "EQ"
    }
    body = codes[408]["body_format_override"]["json_format"]
    assert body["error"]["code"] == "REQUEST_TIMEOUT"


def test_envoy_drops_idle_upstream_connections_before_the_services_do() -> None:
    """uvicorn closes a kept-alive connection after 5 s idle; a request Envoy sends on
    it just then fails (and a POST is not retried): Envoy's own idle limit is lower."""
    for cluster in load_config()["static_resources"]["clusters"]:
        if cluster["name"] == "envoy_admin":  # Envoy's own admin, not a service
            continue
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert _seconds(options["common_http_protocol_options"]["idle_timeout"]) < 5, cluster


def test_the_stats_listener_serves_envoys_metrics_and_nothing_else(tmp_path: Path) -> None:
    """Envoy's own answers (its 503s, 429s, 413s) and its upstreams' health reach
    Prometheus through GET /stats/prometheus on the stats listener; the rest of the
    admin interface (which can stop or drain Envoy) stays out of reach."""
    with running_envoy(tmp_path, free_port(), free_port()) as envoy:
        httpx.get(f"{envoy.url}/api/v1/healthz")  # one answer to count (a 503: no edge)
        stats = f"http://127.0.0.1:{envoy.stats_port}"
        metrics = httpx.get(f"{stats}/stats/prometheus")
        assert metrics.status_code == 200
        assert "envoy_http_downstream_rq_xx" in metrics.text
        assert 'envoy_cluster_name="edge_api"' in metrics.text
        for method, path in [
            ("POST", "/stats/prometheus"),
            ("GET", "/stats"),
            ("POST", "/quitquitquit"),
            ("POST", "/healthcheck/fail"),
            ("GET", "/config_dump"),
            ("GET", "/"),
        ]:
            assert httpx.request(method, stats + path).status_code == 404, (method, path)
        assert httpx.get(f"http://127.0.0.1:{envoy.admin_port}/ready").status_code == 200
