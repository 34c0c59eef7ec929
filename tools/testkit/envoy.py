"""A real Envoy on the deployed config, in front of upstreams the caller names."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.components import ChildProcess, free_port, wait_http_ok
from launcher.envoy import envoy_argv, write_local_config

READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class Envoy:
    """A running Envoy: its public URL and port, its admin port, its access log and
    its stats listener's port (GET /stats/prometheus)."""

    url: str
    log_path: Path
    port: int
    admin_port: int
    stats_port: int


@contextmanager
def running_envoy(
    directory: Path,
    edge_port: int,
    gateway_port: int,
    *,
    rewrite: Callable[[Path], Path] | None = None,
    otlp_traces_url: str | None = None,
    rate_limits_enforced: bool = True,
    cors_origins: Sequence[str] = (),
) -> Iterator[Envoy]:
    """deploy/envoy/envoy.yaml with only ports and upstreams rewritten (as the launcher
    does), then ``rewrite`` (a test's own change to the written file), if any."""
    public, admin, stats = free_port(), free_port(), free_port()
    config = write_local_config(
        directory / "envoy.yaml",
        listener_port=public,
        admin_port=admin,
        edge_port=edge_port,
        gateway_port=gateway_port,
        otlp_traces_url=otlp_traces_url,
        rate_limits_enforced=rate_limits_enforced,
        cors_origins=cors_origins,
        stats_port=stats,
    )
    if rewrite is not None:
        config = rewrite(config)
    log_path = directory / "envoy.log"
    process = ChildProcess("envoy", envoy_argv(config), log_path=log_path)
    process.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/ready", READY_TIMEOUT, process)
        yield Envoy(f"http://127.0.0.1:{public}", log_path, public, admin, stats)
    finally:
        process.stop(grace=5)
