"""Fetching output files from the provider's delivery hosts.

Output URLs come from the provider and point at other hosts than its API, so the
request carries no credentials. The body is streamed and abandoned as soon as it
grows past the cap; each attempt also has an overall deadline so a server that
drips bytes cannot hold a worker forever.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx

from generation import metrics
from generation.domain.provider import ProviderRejected, ProviderUnavailable
from generation.providers.replicate_parsing import is_http_url
from generation.providers.retries import (
    UNAVAILABLE_ERRORS,
    RetryPolicy,
    TransientStatus,
    call_with_retries,
    describe_failure,
    is_transient_status,
    parse_retry_after,
)
from kit.logging import get_logger

_log = get_logger("generation.providers.replicate")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ProviderRejected("the output file is larger than allowed")
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) > max_bytes:
            raise ProviderRejected("the output file is larger than allowed")
    return bytes(received)


async def download_capped(
    client: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    *,
    policy: RetryPolicy,
    http_timeout: httpx.Timeout,
    deadline_seconds: float,
) -> bytes:
    """GET ``url`` into memory, at most ``max_bytes``; retries transient failures.

    Raises :class:`ProviderRejected` for non-http(s) URLs, files over the cap and
    4xx answers, :class:`ProviderUnavailable` once transient failures outlast
    the retries.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    if not is_http_url(url):
        raise ProviderRejected("the output URL is not an http(s) URL")
    # Log the host only: output URLs may carry signatures.
    host = urlsplit(url).hostname

    async def attempt(number: int) -> bytes:
        started = time.perf_counter()
        status: int | None = None
        try:
            async with (
                asyncio.timeout(deadline_seconds),
                client.stream("GET", url, timeout=http_timeout, follow_redirects=True) as response,
            ):
                status = response.status_code
                if is_transient_status(status):
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    raise TransientStatus(status, retry_after)
                if status != 200:
                    raise ProviderRejected(f"the output host answered {status}")
                return await _read_capped(response, max_bytes)
        finally:
            metrics.provider_call("download", status, time.perf_counter() - started)
            _log.info(
                "provider.download",
                host=host,
                attempt=number,
                status=status,
                durationMs=round((time.perf_counter() - started) * 1000),
            )

    try:
        return await call_with_retries(attempt, policy, "download")
    except UNAVAILABLE_ERRORS as exc:
        reason = describe_failure(exc)
        _log.warning("provider.unavailable", operation="download", host=host, reason=reason)
        metrics.provider_unavailable("download")
        raise ProviderUnavailable(f"output download failed ({reason})") from None
