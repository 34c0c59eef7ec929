"""Which processes make up the local system, with their commands, env and probes."""

from __future__ import annotations

import sys
from pathlib import Path

from launcher.components import ChildProcess, PostgresServer, S3Server, port_is_free
from launcher.config import DATABASES, LauncherConfig
from launcher.envoy import envoy_argv
from launcher.keys import identity_env
from launcher.units import (
    PostgresUnit,
    ProcessUnit,
    S3Unit,
    Unit,
    grpc_probe,
    http_probe,
    port_probe,
)

SERVICE_MODULES = ("usage", "generation", "edge_api", "webhook_gateway")


def required_modules(config: LauncherConfig) -> list[str]:
    """The ``python -m`` entry points this plan runs."""
    modules = list(SERVICE_MODULES)
    if config.embedded_emulator:
        modules.insert(0, "replicate_emulator")
    return modules


def busy_ports(config: LauncherConfig) -> list[tuple[str, int]]:
    """(variable, port) for every port a part would listen on that is already taken."""
    ports = config.ports
    wanted: list[tuple[str, int, str]] = [
        ("PUBLIC_PORT", ports.public, "0.0.0.0"),
        ("ENVOY_ADMIN_PORT", ports.envoy_admin, "127.0.0.1"),
        ("ENVOY_STATS_PORT", ports.envoy_stats, "127.0.0.1"),
        ("GENERATION_GRPC_PORT", ports.generation_grpc, "127.0.0.1"),
        ("USAGE_GRPC_PORT", ports.usage_grpc, "127.0.0.1"),
        ("EDGE_HTTP_PORT", ports.edge_http, "127.0.0.1"),
        ("GATEWAY_HTTP_PORT", ports.gateway_http, "127.0.0.1"),
        ("GENERATION_METRICS_PORT", ports.generation_metrics, "127.0.0.1"),
        ("USAGE_METRICS_PORT", ports.usage_metrics, "127.0.0.1"),
    ]
    if config.embedded_emulator:
        wanted.append(("EMULATOR_PORT", ports.emulator, "127.0.0.1"))
    if config.embedded_s3:
        wanted.append(("S3_PORT", ports.s3, "127.0.0.1"))
    # A server left running from this data directory is ours: start() replaces it.
    if config.embedded_postgres and _postgres(config).postmaster_pid() is None:
        wanted.append(("PG_PORT", ports.postgres, "127.0.0.1"))
    return [(var, port) for var, port, host in wanted if not port_is_free(port, host)]


def _marker(config: LauncherConfig) -> dict[str, str]:
    """Tags every child with its data directory, so a later launcher can recognize it."""
    return {"LAUNCHER_DATA_DIR": str(config.data_dir)}


def _postgres(config: LauncherConfig) -> PostgresServer:
    return PostgresServer(
        config.data_dir / "postgres", config.ports.postgres, config.logs_dir / "postgres.log"
    )


def postgres(config: LauncherConfig) -> Unit:
    """The embedded PostgreSQL with one database per service."""
    return PostgresUnit(_postgres(config), DATABASES)


def s3(config: LauncherConfig) -> Unit:
    """The embedded S3 server."""
    server = S3Server(
        config.data_dir / "s3",
        config.ports.s3,
        config.s3_access_key,
        config.s3_secret_key,
        log_path=config.logs_dir / "s3.log",
    )
    server.child.env = {**server.child.env, **_marker(config)}
    return S3Unit(server)


def _python_module(
    config: LauncherConfig, name: str, module: str, env: dict[str, str]
) -> ChildProcess:
    return ChildProcess(
        name,
        [sys.executable, "-m", module],
        env={**config.environ, **config.service_env(), **_marker(config), **env},
        log_path=config.logs_dir / f"{name}.log",
    )


def emulator(config: LauncherConfig) -> Unit:
    """The Replicate emulator (stands in for the provider offline)."""
    port = config.ports.emulator
    child = _python_module(config, "emulator", "replicate_emulator", config.emulator_env())
    return ProcessUnit(child, f"Replicate emulator on 127.0.0.1:{port}", port_probe(port))


def usage(config: LauncherConfig) -> Unit:
    """The usage service (plans, ledger)."""
    port = config.ports.usage_grpc
    env = {"DATABASE_URL": config.database_url("usage"), **identity_env(config, "usage")}
    child = _python_module(config, "usage", "usage", env)
    return ProcessUnit(
        child, f"usage service (gRPC 127.0.0.1:{port})", grpc_probe(f"127.0.0.1:{port}")
    )


def generation(config: LauncherConfig) -> Unit:
    """The generation service (jobs, provider, assets)."""
    port = config.ports.generation_grpc
    env = {"DATABASE_URL": config.database_url("generation"), **identity_env(config, "generation")}
    child = _python_module(config, "generation", "generation", env)
    return ProcessUnit(
        child, f"generation service (gRPC 127.0.0.1:{port})", grpc_probe(f"127.0.0.1:{port}")
    )


def edge_api(config: LauncherConfig) -> Unit:
    """The public REST API behind Envoy."""
    port = config.ports.edge_http
    child = _python_module(config, "edge-api", "edge_api", identity_env(config, "edge-api"))
    return ProcessUnit(
        child, f"edge API (HTTP 127.0.0.1:{port})", http_probe(f"http://127.0.0.1:{port}/healthz")
    )


def webhook_gateway(config: LauncherConfig) -> Unit:
    """The Replicate webhook receiver behind Envoy."""
    port = config.ports.gateway_http
    child = _python_module(
        config, "webhook-gateway", "webhook_gateway", identity_env(config, "webhook-gateway")
    )
    return ProcessUnit(
        child,
        f"webhook gateway (HTTP 127.0.0.1:{port})",
        http_probe(f"http://127.0.0.1:{port}/healthz"),
    )


def envoy(config: LauncherConfig, config_path: Path) -> Unit:
    """Envoy in front, on the rewritten deploy config."""
    ports = config.ports
    log_path = config.logs_dir / "envoy.log"
    child = ChildProcess("envoy", envoy_argv(config_path), env=_marker(config), log_path=log_path)
    return ProcessUnit(
        child,
        f"Envoy on {config.public_host}:{ports.public} (admin 127.0.0.1:{ports.envoy_admin})",
        http_probe(f"http://127.0.0.1:{ports.envoy_admin}/ready"),
        grace=5.0,
    )
