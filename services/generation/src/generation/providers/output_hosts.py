"""Which output URLs may be fetched at all: the provider's delivery hosts, by name.

A webhook names the files to copy, so without this check a forged or replayed
event could make the service fetch an internal address and publish the answer
as a render. This module decides on the URL alone (scheme, user info, host name,
port); :mod:`generation.providers.output_addresses` then checks every address
the name resolves to, at connect time, on every redirect hop.

Allowed: HTTPS on the default port to a configured host or a subdomain of a
``*.``-pattern, and the exact scheme, host and port of the API base URL when
that is not Replicate's own API (an emulator serves its outputs itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from generation.domain.provider import OutputRefused

# Outputs never come from the real API host, so it is not trusted for them.
REPLICATE_API_HOST = "api.replicate.com"
_HTTPS_PORT = 443


def normalized_host(host: str) -> str:
    """``host`` lower-cased without its root dot (``Replicate.Delivery.`` -> ``...delivery``)."""
    lowered = host.lower()
    return lowered[:-1] if lowered.endswith(".") else lowered


@dataclass(frozen=True)
class Origin:
    """A scheme, host and port, as compared when trusting an exact origin."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> Origin:
        """The origin of ``url`` with its default port filled in."""
        port = url.port or (_HTTPS_PORT if url.scheme == "https" else 80)
        return cls(url.scheme, normalized_host(url.host), port)


class OutputHosts:
    """The allow-list of output hosts, built from the runtime config and the API URL."""

    def __init__(self, patterns: Iterable[str], api_base_url: str | None = None) -> None:
        self._exact = frozenset(p for p in patterns if not p.startswith("*."))
        self._suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        self.trusted_origin: Origin | None = None
        if api_base_url:
            origin = Origin.of(httpx.URL(api_base_url))
            if origin.host != REPLICATE_API_HOST and not self._names_allowed(origin.host):
                self.trusted_origin = origin

    def checked_url(self, url: str | httpx.URL) -> httpx.URL:
        """``url`` parsed, when it may be fetched; raises :class:`OutputRefused` otherwise."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise OutputRefused("the output URL cannot be read", host=None) from None
        host = normalized_host(parsed.host)
        # "https://replicate.delivery@127.0.0.1/" names 127.0.0.1: user info is never
        # needed for an output file, so any is refused rather than interpreted.
        if parsed.userinfo or not host:
            raise OutputRefused("the output URL carries user info or no host", host=host)
        if self.trusted_origin is not None and Origin.of(parsed) == self.trusted_origin:
            return parsed
        if parsed.scheme != "https" or (parsed.port or _HTTPS_PORT) != _HTTPS_PORT:
            raise OutputRefused("the output URL is not HTTPS on the default port", host=host)
        if not self._names_allowed(host):
            raise OutputRefused("the output host is not a delivery host", host=host)
        return parsed

    def _names_allowed(self, host: str) -> bool:
        return host in self._exact or any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self._suffixes
        )
