"""The public base URL a request came in through (scheme://host[:port]).

Behind Envoy the edge sees Envoy's connection; the original scheme and host
arrive in ``X-Forwarded-Proto`` / ``X-Forwarded-Host``. Those headers are
believed only when the peer is a trusted proxy (by default 127.0.0.1), and only
when they look like a scheme and a host: anyone else could forge them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from starlette.requests import Request

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?$")
_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class TrustedProxies:
    """Peers whose forwarding headers are believed: addresses, CIDR networks or ``*``."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """From a comma-separated list; ValueError names a bad entry."""
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        if "*" in entries:
            return cls(everyone=True)
        return cls(networks=tuple(ipaddress.ip_network(entry, strict=False) for entry in entries))

    def trusts(self, peer: str | None) -> bool:
        """True when ``peer`` (an IP address) is a trusted proxy."""
        if self.everyone:
            return True
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def _nearest(value: str | None) -> str:
    """The value the closest proxy added (proxies append to comma lists)."""
    if not value:
        return ""
    return value.rsplit(",", 1)[-1].strip()


def request_base_url(request: Request, trusted_proxies: TrustedProxies) -> str:
    """``scheme://host[:port]`` of the entry point the user reached."""
    scheme = str(request.scope.get("scheme", "http"))
    host = request.headers.get("host", "")
    peer = request.client.host if request.client else None
    if trusted_proxies.trusts(peer):
        forwarded_proto = _nearest(request.headers.get("x-forwarded-proto")).lower()
        if forwarded_proto in _SCHEMES:
            scheme = forwarded_proto
        forwarded_host = _nearest(request.headers.get("x-forwarded-host"))
        if _HOST.fullmatch(forwarded_host):
            host = forwarded_host
    if not _HOST.fullmatch(host):
        host = _server_address(request)
    return f"{scheme}://{host.lower()}"


def _server_address(request: Request) -> str:
    """The address the server listens on, for requests without a usable Host."""
    server = request.scope.get("server")
    if not server:
        return "localhost"
    address, port = str(server[0]), server[1]
    if ":" in address:
        address = f"[{address}]"
    return f"{address}:{port}" if port else address
