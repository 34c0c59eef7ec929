"""A real Envoy on the deployed config, in front of upstreams the caller names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.components import ChildProcess, free_port, wait_http_ok
from launcher.envoy import envoy_argv, write_local_config


@dataclass(frozen=True)
class Envoy:
    """A running Envoy: its public URL and its access log."""

    url: str
    log_path: Path


@contextmanager
def running_envoy(directory: Path, edge_port: int, gateway_port: int) -> Iterator[Envoy]:
    """deploy/envoy/envoy.yaml with only ports and upstreams rewritten (as the launcher does)."""
    public, admin = free_port(), free_port()
    config = write_local_config(
        directory / "envoy.yaml",
        listener_port=public,
        admin_port=admin,
        edge_port=edge_port,
        gateway_port=gateway_port,
    )
    process = ChildProcess("envoy", envoy_argv(config), log_path=directory / "envoy.log")
    process.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/ready", 20, process)
        yield Envoy(f"http://127.0.0.1:{public}", directory / "envoy.log")
    finally:
        process.stop(grace=5)
