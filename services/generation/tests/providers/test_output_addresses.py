"""Output connections: only public addresses, checked after resolution, on every hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import pytest

from generation.domain.provider import OutputRefused
from generation.providers.output_addresses import AddressGuard, is_public_address
from generation.providers.output_hosts import Origin
from generation.providers.replicate import ReplicateProvider


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "54.230.10.1",
        "2606:4700:4700::1111",
        "2a00:1450::1",
        "64:ff9b::808:808",  # 8.8.8.8 through an IPv6-only network's NAT64 (DNS64)
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fec0::1",  # site-local: deprecated (RFC 3879), still private where in use
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "not an address",
        "",
    ],
)
def test_internal_and_unreadable_addresses_fail(address: str) -> None:
    assert not is_public_address(address)


@dataclass
class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The wrapped backend: records where the guard asked it to connect."""

    connected: list[tuple[str, int]] = field(default_factory=list)

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append((host, port))
        return object()


def resolving_to(*addresses: str) -> Callable[[str, int], Any]:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def test_the_guard_connects_to_the_address_it_checked_not_the_name() -> None:
    inner = RecordingBackend()
    guard = AddressGuard(None, resolving_to("93.184.216.34"), inner)

    await guard.connect_tcp("replicate.delivery", 443)

    assert inner.connected == [("93.184.216.34", 443)]


@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1",),
        ("93.184.216.34", "10.0.0.5"),
        ("::ffff:169.254.169.254",),
        ("fd00:ec2::254",),
    ],
)
async def test_one_internal_address_among_the_answers_refuses(addresses: tuple[str, ...]) -> None:
    inner = RecordingBackend()
    guard = AddressGuard(None, resolving_to(*addresses), inner)

    with pytest.raises(OutputRefused) as refused:
        await guard.connect_tcp("pbxt.replicate.delivery.", 443)

    assert refused.value.host == "pbxt.replicate.delivery"
    assert inner.connected == []


async def test_only_the_exact_trusted_origin_may_be_internal() -> None:
    inner = RecordingBackend()
    guard = AddressGuard(Origin("http", "127.0.0.1", 8090), resolving_to("127.0.0.1"), inner)

    await guard.connect_tcp("127.0.0.1", 8090)
    with pytest.raises(OutputRefused):
        await guard.connect_tcp("127.0.0.1", 8091)

    assert inner.connected == [("127.0.0.1", 8090)]


async def test_a_name_that_does_not_resolve_is_a_connection_error() -> None:
    async def fail(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    with pytest.raises(httpcore.ConnectError):
        await AddressGuard(None, fail, RecordingBackend()).connect_tcp("replicate.delivery", 443)


@dataclass
class LocalServer:
    """A real HTTP server on 127.0.0.1 that counts connections and answers ``answer``."""

    answer: bytes
    connections: int = 0
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.answer)
        await writer.drain()
        writer.close()


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[[bytes], Any]]:
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> LocalServer:
        local = LocalServer(answer)
        server = await asyncio.start_server(local._handle, "127.0.0.1", 0)
        servers.append(server)
        local.port = server.sockets[0].getsockname()[1]
        return local

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def redirect_to(location: str) -> bytes:
    return (
        f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _provider(api_port: int, resolver: Any = None) -> ReplicateProvider:
    options: dict[str, Any] = {"resolver": resolver} if resolver else {}
    return ReplicateProvider(
        f"http://127.0.0.1:{api_port}",
        "r8_token",
        "google/nano-banana",
        timeout_seconds=2,
        max_attempts=1,
        **options,
    )


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/x", "http://localhost:{port}/x"])
async def test_a_redirect_from_the_trusted_origin_to_another_local_server_is_refused(
    start_server: Any, target: str
) -> None:
    victim = await start_server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    origin = await start_server(redirect_to(target.format(port=victim.port)))
    provider = _provider(origin.port)
    try:
        with pytest.raises(OutputRefused):
            await provider.download_output(f"http://127.0.0.1:{origin.port}/files/a.jpg", 100)
    finally:
        await provider.aclose()

    assert origin.connections == 1
    assert victim.connections == 0


async def test_a_redirect_to_a_delivery_name_resolving_to_loopback_is_refused(
    start_server: Any,
) -> None:
    victim = await start_server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    origin = await start_server(redirect_to("https://evil.replicate.delivery/x.jpg"))
    resolved: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    provider = _provider(origin.port, rebinding)
    try:
        with pytest.raises(OutputRefused):
            await provider.download_output(f"http://127.0.0.1:{origin.port}/files/a.jpg", 100)
    finally:
        await provider.aclose()

    assert resolved == ["127.0.0.1", "evil.replicate.delivery"]
    assert victim.connections == 0


async def test_the_trusted_origin_itself_is_fetched(start_server: Any) -> None:
    origin = await start_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nimage")
    provider = _provider(origin.port)
    try:
        data = await provider.download_output(f"http://127.0.0.1:{origin.port}/files/a.jpg", 100)
    finally:
        await provider.aclose()

    assert data == b"image"
