"""Envoy's native OpenTelemetry tracer, added only when a collector is configured.

deploy/envoy/envoy.yaml has no tracing section, so Envoy traces nothing by default
(no tracer, no collector cluster: nothing to fail to reach). With an OTLP/HTTP
traces URL (the services' own, ``kit.tracing.traces_url``) the launcher adds the
tracer to the public listener's connection manager and one cluster for the collector;
Envoy then starts or continues the W3C trace and passes ``traceparent`` to the edge
and the gateway, whose spans become its children.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

COLLECTOR_CLUSTER = "otel_collector"
# Routes whose URLs carry a credential (EventSource cannot send headers).
UNTRACED_ROUTES = frozenset({"job_events"})
_HCM = "envoy.filters.network.http_connection_manager"


class TracingConfigError(ValueError):
    """The OTLP endpoint cannot be used by Envoy."""


def with_tracing(
    config: dict[str, Any], traces_url: str, service_name: str = "envoy"
) -> dict[str, Any]:
    """A copy of ``config`` that exports Envoy's spans to the OTLP/HTTP ``traces_url``
    (the whole URL, ``.../v1/traces``)."""
    parts = urlsplit(traces_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise TracingConfigError(f"not an http(s) OTLP traces URL: {traces_url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    traced = copy.deepcopy(config)
    manager = _connection_manager(traced)
    manager["tracing"] = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": service_name,
                "http_service": {
                    "http_uri": {
                        "uri": traces_url,
                        "cluster": COLLECTOR_CLUSTER,
                        "timeout": "1s",
                    }
                },
            },
        }
    }
    _untraced(manager, UNTRACED_ROUTES)
    traced["static_resources"]["clusters"].append(_collector_cluster(parts.hostname, port))
    return traced


def _untraced(manager: dict[str, Any], names: frozenset[str]) -> None:
    """Sample none of the named routes: Envoy tags its spans with the whole URL, query
    included, and the SSE route is the one that carries ``access_token`` there."""
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if route.get("name") in names:
                route["tracing"] = {"overall_sampling": {"numerator": 0, "denominator": "HUNDRED"}}


def _connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    for chain in config["static_resources"]["listeners"][0]["filter_chains"]:
        for entry in chain["filters"]:
            if entry["name"] == _HCM:
                manager: dict[str, Any] = entry["typed_config"]
                return manager
    raise TracingConfigError("the listener has no HTTP connection manager")


def _collector_cluster(host: str, port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": host, "port_value": port}}
    return {
        "name": COLLECTOR_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
