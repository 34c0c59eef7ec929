"""The gRPC server bootstrap every service uses.

``grpc.aio`` with the standard health service, reflection only when asked (development),
interceptors (request context + logs, per-rpc metrics, service identity, domain errors ->
rich status), deliberate message size limits, and a graceful stop: health goes
NOT_SERVING, in-flight calls get ``grace`` seconds, then the owner's cleanup (engine
disposal) runs.
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

log = get_logger("kit.grpc_server")


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
        verifier: TokenVerifier | None = None,
        reflection: bool = False,
        unavailable_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._bindings = bindings
        self._address = f"{host}:{port}"
        self._on_stop = on_stop
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
                ("grpc.max_connection_age_ms", 5 * 60 * 1000),
                ("grpc.max_connection_age_grace_ms", 30 * 1000),
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
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc.started", address=self._address.rsplit(":", 1)[0], port=self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, then let in-flight calls finish, then clean up."""
        await self.health.enter_graceful_shutdown()
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
