"""Connecting to output hosts only at public addresses, checked after resolution.

A name on the allow-list could still resolve to 127.0.0.1 or the cloud metadata
service, and a name checked once could resolve differently a moment later (DNS
rebinding). So the download client's connections go through
:class:`AddressGuard`: it resolves the name itself, refuses unless EVERY address
is public, and connects to an address it checked, never to the name. TLS still
verifies the certificate against the name (httpcore sends the URL's host as SNI).

The one exception is the trusted origin (the emulator the API base URL points
at), whose outputs are served from the same, usually loopback, address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from generation.domain.provider import OutputRefused
from generation.providers.output_hosts import Origin, normalized_host

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Cloud metadata services; also covered by the link-local and private rules, named
# here so that a change to those rules cannot let them through.
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(text: str) -> bool:
    """True for a globally routable unicast address; False for anything internal.

    Loopback, private, link-local, site-local, multicast, unspecified, reserved, shared
    (CGNAT) and metadata addresses are not public, nor are IPv6 forms embedding them.
    """
    try:
        address: Address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
        if embedded is not None and address in _NAT64:
            # How an IPv6-only network (DNS64) reaches that public IPv4 address; the
            # prefix itself counts as reserved, which would refuse every output there.
            return True
    if address in _METADATA or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False  # fec0::/10: deprecated, but private on the networks that still use it
    return address.is_global and not address.is_reserved


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class AddressGuard(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to checked, public addresses."""

    def __init__(
        self,
        trusted_origin: Origin | None,
        resolver: Resolver = resolve_host,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._trusted = trusted_origin
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, check every address, connect to the first that answers."""
        addresses = await self.checked_addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError("no address to connect to")

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``; raises :class:`OutputRefused` if any is internal."""
        name = normalized_host(host)
        try:
            addresses = await self._resolve(name, port)
        except OSError:
            raise httpcore.ConnectError("the output host does not resolve") from None
        if not addresses:
            raise httpcore.ConnectError("the output host does not resolve")
        if self._is_trusted(name, port):
            return addresses
        # Every address, not just the first: a name answering one public and one
        # internal address is refused, whichever a later connection would pick.
        if not all(is_public_address(address) for address in addresses):
            raise OutputRefused("the output host resolves to an internal address", host=name)
        return addresses

    def _is_trusted(self, name: str, port: int) -> bool:
        trusted = self._trusted
        return trusted is not None and trusted.host == name and trusted.port == port

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never used for outputs: refused."""
        raise OutputRefused("output files are never fetched over a Unix socket", host=None)

    async def sleep(self, seconds: float) -> None:
        """As the wrapped backend sleeps."""
        await self._inner.sleep(seconds)


def guarded_transport(
    trusted_origin: Origin | None, limits: httpx.Limits, resolver: Resolver = resolve_host
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through :class:`AddressGuard`."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx takes no network backend; its pool is replaced by an identical one that
    # has ours (same TLS context and limits). No proxy: trust_env is off on the client.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AddressGuard(trusted_origin, resolver),
    )
    return transport
