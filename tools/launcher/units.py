"""The parts the launcher supervises, each behind one small interface.

A unit starts and returns only once it is ready (port open, gRPC health
SERVING, HTTP 2xx), or raises :class:`UnitError`. Waits give up early when the
part's process dies or when the launcher is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kit.settings import S3Settings
from kit.storage import ObjectStorage, StorageError
from launcher.components import ChildProcess, PostgresServer, S3Server, port_is_open


class UnitError(Exception):
    """A part did not start or did not become ready."""


class StopRequested(Exception):
    """The launcher was asked to stop while it was still starting."""


Probe = Callable[[], bool]


class Unit(ABC):
    """One supervised part of the local system."""

    def __init__(self, name: str, description: str, log_path: Path | None) -> None:
        self.name = name
        self.description = description
        self.log_path = log_path

    @abstractmethod
    def launch(self) -> None:
        """Begin starting (returns at once for a process; raises UnitError)."""

    @abstractmethod
    def wait_ready(self, timeout: float, cancel: threading.Event) -> None:
        """Wait until ready; raise UnitError or StopRequested (and clean up)."""

    def start(self, timeout: float, cancel: threading.Event) -> None:
        """Launch and wait until ready."""
        self.launch()
        self.wait_ready(timeout, cancel)

    @abstractmethod
    def stop(self) -> None:
        """Stop and wait until gone (idempotent)."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL it, as a crash would (no graceful shutdown), and wait until gone."""

    @abstractmethod
    def alive(self) -> bool:
        """True while its process runs."""

    @abstractmethod
    def pids(self) -> list[int]:
        """Pids of the processes it runs (for the state file and the tests)."""


def wait_until(
    probe: Probe,
    *,
    what: str,
    timeout: float,
    cancel: threading.Event,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll ``probe`` until true; fail on timeout, death of the process, or cancel."""
    deadline = time.monotonic() + timeout
    while True:
        if cancel.is_set():
            raise StopRequested
        if probe():
            return
        if not alive():
            raise UnitError(f"exited before {what}")
        if time.monotonic() > deadline:
            raise UnitError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def port_probe(port: int) -> Probe:
    """Ready when ``port`` accepts TCP connections."""
    return lambda: port_is_open(port)


def http_probe(url: str) -> Probe:
    """Ready when GET ``url`` answers 2xx."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1.0, trust_env=False).is_success
        except httpx.HTTPError:
            return False

    return probe


def grpc_probe(target: str, service: str = "") -> Probe:
    """Ready when the standard gRPC health check says SERVING."""

    def probe() -> bool:
        with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
            except grpc.RpcError:
                return False
        serving: bool = response.status == health_pb2.HealthCheckResponse.SERVING
        return serving

    return probe


class ProcessUnit(Unit):
    """A child process (a service, the emulator, Envoy) plus its readiness probe."""

    def __init__(
        self, child: ChildProcess, description: str, probe: Probe, *, grace: float = 15.0
    ) -> None:
        super().__init__(child.name, description, child.log_path)
        self.child = child
        self.probe = probe
        self.grace = grace

    def launch(self) -> None:
        try:
            self.child.start()
        except OSError as exc:
            raise UnitError(f"cannot run {self.child.argv[0]}: {exc}") from exc

    def wait_ready(self, timeout: float, cancel: threading.Event) -> None:
        try:
            wait_until(
                self.probe,
                what="it became ready",
                timeout=timeout,
                cancel=cancel,
                alive=self.child.alive,
            )
        except BaseException:
            self.child.stop(grace=3.0)
            raise

    def stop(self) -> None:
        self.child.stop(grace=self.grace)

    def kill(self) -> None:
        self.child.kill()

    def alive(self) -> bool:
        return self.child.alive()

    def pids(self) -> list[int]:
        return [self.child.pid] if self.child.alive() else []

    def exit_code(self) -> int | None:
        process = self.child.process
        return None if process is None else process.poll()


class PostgresUnit(Unit):
    """The embedded PostgreSQL server and the databases the services need."""

    def __init__(self, server: PostgresServer, databases: Sequence[str]) -> None:
        super().__init__("postgres", f"PostgreSQL on 127.0.0.1:{server.port}", server.log_path)
        self.server = server
        self.databases = tuple(databases)

    def launch(self) -> None:
        # pg_ctl -w returns once the server accepts connections.
        try:
            self.server.start()
        except Exception as exc:
            raise UnitError(f"PostgreSQL did not start: {exc}") from exc
        try:
            for database in self.databases:
                self.server.create_database(database)
        except Exception as exc:
            # Started but not launched: nothing else would ever stop this server.
            with contextlib.suppress(Exception):
                self.server.stop()
            raise UnitError(f"PostgreSQL did not start: {exc}") from exc

    def wait_ready(self, timeout: float, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise StopRequested

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()

    def alive(self) -> bool:
        return self.server.postmaster_pid() is not None

    def pids(self) -> list[int]:
        pid = self.server.postmaster_pid()
        return [] if pid is None else [pid]


class S3Unit(ProcessUnit):
    """The embedded S3 server (nanio)."""

    def __init__(self, server: S3Server) -> None:
        super().__init__(
            server.child,
            f"S3 server (nanio) on 127.0.0.1:{server.port}",
            port_probe(server.port),
            grace=5.0,
        )
        server.data_dir.mkdir(parents=True, exist_ok=True)


def ensure_buckets(settings: S3Settings, buckets: Sequence[str], timeout: float = 15.0) -> None:
    """Create each bucket unless it exists (for an embedded or an external S3)."""
    storage = ObjectStorage(settings, pool_size=2, timeout_seconds=timeout)

    async def run() -> None:
        for bucket in buckets:
            await storage.ensure_bucket(bucket)

    try:
        asyncio.run(run())
    except StorageError as exc:
        raise UnitError(f"cannot create the buckets on {settings.s3_endpoint}: {exc}") from exc
