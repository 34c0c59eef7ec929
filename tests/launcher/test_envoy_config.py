"""The one Envoy config: Envoy accepts it, and the local rewrite touches only addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.envoy import (
    ENVOY_CONFIG,
    EnvoyConfigError,
    load_config,
    rewrite_for_local,
    validate,
    write_local_config,
)


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
    }
    assert all(c["type"] == "STRICT_DNS" for c in clusters.values())


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
