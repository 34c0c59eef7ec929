"""The gRPC server bootstrap every service uses.

``grpc.aio`` with the standard health service, reflection only when asked (development),
interceptors (request context + logs, per-rpc metrics, service identity, domain errors ->
rich status), deliberate message size limits, and a graceful stop: health goes
NOT_SERVING, in-flight calls get ``grace`` seconds, then the owner's cleanup (engine
disposal) runs.

Health says two things. The overall status (service ``""``) is the process's: SERVING
from the start until the graceful stop, for liveness probes (a database outage must
not get every replica restarted). Each named service (``interior.generation.v1...``)
also follows the server's ``readiness`` check when it has one (a service with a
database: can it reach it?), asked every ``READINESS_INTERVAL_SECONDS``: NOT_SERVING
while the check fails, for readiness probes and the edge's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from kit.grpc_interceptors import (
    DomainErrorInterceptor,
    Policy,
    RequestContextInterceptor,
    ServiceAuthInterceptor,
)
from kit.logging import get_logger
from kit.metrics import MetricsInterceptor
from kit.service_identity import TokenVerifier
from kit.wire import FEED_STREAM_SECONDS

log = get_logger("kit.grpc_server")

# How often a server's readiness check runs (seconds); a check gets half of it.
READINESS_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer: its full proto name, how to add it to a server, who may call what.

    ``callers`` maps each method name to the identities allowed to call it; with
    service identity on, a method missing from it is denied to everyone.
    """

    full_name: str
    register: Callable[[grpc.aio.Server], None]
    callers: Mapping[str, Iterable[str]] = field(default_factory=dict)


def access_policy(bindings: Sequence[ServiceBinding]) -> Policy:
    """Full method path (``/pkg.Service/Method``) -> the callers allowed to use it."""
    return {
        f"/{binding.full_name}/{method}": frozenset(callers)
        for binding in bindings
        for method, callers in binding.callers.items()
    }


class GrpcServer:
    """A started-on-demand ``grpc.aio`` server with health (and reflection when asked).

    With a ``verifier`` every call but health needs a service token of a caller its
    binding allows (UNAUTHENTICATED / PERMISSION_DENIED otherwise). Reflection lists
    every method to anyone who can connect: development only. ``unavailable_errors``:
    exception types of this service's dependencies that mean "unreachable, retry"
    (a service with a database passes ``kit.db.UNAVAILABLE_ERRORS``).
    """

    def __init__(
        self,
        bindings: Sequence[ServiceBinding],
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        on_stopping: Callable[[], Awaitable[None]] | None = None,
        verifier: TokenVerifier | None = None,
        reflection: bool = False,
        unavailable_errors: tuple[type[BaseException], ...] = (),
        readiness: Callable[[], Awaitable[bool]] | None = None,
        readiness_interval: float = READINESS_INTERVAL_SECONDS,
    ) -> None:
        self._bindings = bindings
        self._readiness = readiness
        self._readiness_interval = readiness_interval
        self._readiness_task: asyncio.Task[None] | None = None
        # Set by stop(): a start still in its first readiness check then follows no more.
        self._stopping = False
        self._address = f"{host}:{port}"
        self._on_stop = on_stop
        self._on_stopping = on_stopping
        self._reflection = reflection
        self.health = health_aio.HealthServicer()
        interceptors: list[grpc.aio.ServerInterceptor] = [
            RequestContextInterceptor(),
            MetricsInterceptor(),
        ]
        if verifier is not None:
            interceptors.append(ServiceAuthInterceptor(verifier, access_policy(bindings)))
        interceptors.append(DomainErrorInterceptor(unavailable_errors))
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                # Clients reconnect every few minutes, so new replicas get their share.
                # A retired connection's calls may finish: a change feed stream lasts
                # up to FEED_STREAM_SECONDS (cut after 30 s, the edge dropped its
                # settled views and re-read every watched job every 5 minutes).
                ("grpc.max_connection_age_ms", 5 * 60 * 1000),
                ("grpc.max_connection_age_grace_ms", int((FEED_STREAM_SECONDS + 60) * 1000)),
                # A fixed receive window per stream (two upload chunks) instead of
                # one grown by bandwidth probing: with 50 uploads of 10 MB arriving
                # at once, probing let generation buffer 15-35 MiB more (bench
                # upload_peak_rss_mb 300-328 -> 290-293), at the same CPU.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", 512 * 1024),
            ],
        )
        self.port = 0

    async def start(self) -> int:
        """Bind, start serving, mark every service SERVING; returns the port."""
        for binding in self._bindings:
            binding.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [b.full_name for b in self._bindings]
        if self._reflection:
            reflection.enable_server_reflection(
                [
                    *names,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ],
                self.server,
            )
        self.port = self.server.add_insecure_port(self._address)
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        ready = await self._ready()
        if self._stopping:  # stop() came during that first check: nothing more to start
            return self.port
        await self._set_named(ready)
        if self._readiness is not None:
            self._readiness_task = asyncio.create_task(
                self._follow_readiness(ready), name="grpc-readiness"
            )
        log.info("grpc.started", address=self._address.rsplit(":", 1)[0], port=self.port)
        return self.port

    async def _ready(self) -> bool:
        """The readiness check's answer (True without one); a check that raises or takes
        longer than half the interval says not ready."""
        if self._readiness is None:
            return True
        try:
            async with asyncio.timeout(self._readiness_interval / 2):
                return await self._readiness()
        except Exception as error:
            log.debug("grpc.readiness_check_failed", error=type(error).__name__)
            return False

    async def _set_named(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for binding in self._bindings:
            await self.health.set(binding.full_name, status)

    async def _follow_readiness(self, ready: bool) -> None:
        if not ready:
            log.warning("grpc.not_ready")
        while True:
            await asyncio.sleep(self._readiness_interval)
            now = await self._ready()
            if now == ready:
                continue
            if now:
                log.info("grpc.ready")
            else:
                log.warning("grpc.not_ready")
            ready = now
            await self._set_named(ready)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, then let in-flight calls finish, then clean up."""
        self._stopping = True
        if self._readiness_task is not None:
            self._readiness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness_task
        await self.health.enter_graceful_shutdown()
        if self._on_stopping is not None:
            # Calls that never end by themselves (streams followers resume elsewhere)
            # are ended here, so the grace waits only for calls that do.
            await self._on_stopping()
        await self.server.stop(grace)
        if self._on_stop is not None:
            await self._on_stop()
        log.info("grpc.stopped")

    async def serve_until_signal(self, grace: float) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("grpc.stopping", grace_seconds=grace)
        await self.stop(grace)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
