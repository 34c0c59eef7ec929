"""Fetching output files from the provider's delivery hosts.

Output URLs come from the provider and point at other hosts than its API, so the
request carries no credentials. Every URL, the first and each redirect target, is
checked against :class:`OutputHosts` before it is requested (redirects are
followed here, a few at most, never by httpx), and the client's connections check
the resolved addresses (:mod:`generation.providers.output_addresses`). The body is
streamed and abandoned as soon as it grows past the cap; each attempt also has an
overall deadline so a server that drips bytes cannot hold a worker forever. A caller
that waits (a webhook's or a GET's RPC) bounds the attempts and the retries with its
own deadline, as the API calls do: a slow delivery host then defers the copy (the
next webhook, refresh or sweep tries again) instead of outlasting the caller.
"""

from __future__ import annotations

import asyncio
import time
from typing import NoReturn

import httpx

from generation import metrics
from generation.domain.provider import (
    Deadline,
    OutputRefused,
    ProviderRejected,
)
from generation.providers.output_hosts import OutputHosts
from generation.providers.retries import (
    UNAVAILABLE_ERRORS,
    EmptyBody,
    NotAFile,
    RetryPolicy,
    TransientStatus,
    attempt_seconds,
    call_with_retries,
    is_transient_status,
    parse_retry_after,
    unavailable,
)
from kit.logging import get_logger

_log = get_logger("generation.providers.replicate")
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# Media types of a page, never of an output file: an image/* is one, and so are the
# generic application/octet-stream or no type at all, which storage services send.
_PAGE_TYPES = ("text/", "application/json", "application/xml", "application/problem+")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    # Asked for as is (identity): a compressed answer would be unpacked a whole network
    # chunk at a time before the cap could see it (a few KB of brotli: gigabytes).
    # Both refusals are for good (OutputRefused): the same file comes back the same
    # way, so the job ends now rather than be retried until its overall timeout.
    host = response.url.host
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"", "identity"}:
        raise OutputRefused("the output file came compressed", host=host)
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith(_PAGE_TYPES):
        raise NotAFile(f"the output host answered {media_type[:40]}, not a file")
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise OutputRefused("the output file is larger than allowed", host=host)
    received = bytearray()
    # Identity only (checked above), so these are the bytes as they came: no decoder runs.
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) > max_bytes:
            raise OutputRefused("the output file is larger than allowed", host=host)
    if not received:
        # Stored, it would be a succeeded (and charged) render of nothing.
        raise EmptyBody("the output file came empty")
    return bytes(received)


async def _open_checked(
    client: httpx.AsyncClient,
    url: httpx.URL,
    hosts: OutputHosts,
    http_timeout: httpx.Timeout,
) -> httpx.Response:
    """The streamed answer for ``url``, after at most MAX_REDIRECTS checked redirects.

    The caller closes the answer. Raises :class:`OutputRefused` when a hop leaves
    the delivery hosts and :class:`ProviderRejected` for too many redirects.
    """
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request(
            "GET", url, timeout=http_timeout, headers={"Accept-Encoding": "identity"}
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in _REDIRECTS or location is None:
            return response
        await response.aclose()
        url = _next_hop(url, location, hosts)
    raise ProviderRejected("the output URL redirects too often")


def _next_hop(url: httpx.URL, location: str, hosts: OutputHosts) -> httpx.URL:
    """The checked target of a redirect from ``url`` (relative locations included)."""
    try:
        target = url.join(location)
    except (httpx.InvalidURL, ValueError):
        raise OutputRefused("the output redirect cannot be read", host=url.host) from None
    return hosts.checked_url(target)


async def download_capped(
    client: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    *,
    hosts: OutputHosts,
    policy: RetryPolicy,
    http_timeout: httpx.Timeout,
    deadline_seconds: float,
    deadline: Deadline | None = None,
) -> bytes:
    """GET ``url`` into memory, at most ``max_bytes``; retries transient failures.

    ``deadline_seconds`` bounds each attempt; ``deadline``, the caller's, bounds the
    attempts and the retries together (None: no caller waits, the policy alone).

    Raises :class:`OutputRefused` for a URL (or redirect) outside the delivery
    hosts and for a file over the cap or compressed, :class:`ProviderRejected` for
    4xx answers,
    :class:`ProviderUnavailable` once transient failures outlast the retries.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    try:
        checked = hosts.checked_url(url)
    except OutputRefused as refusal:
        _refused(refusal)
    # Log the host only: output URLs may carry signatures.
    host = checked.host

    async def attempt(number: int) -> bytes:
        started = time.perf_counter()
        status: int | None = None
        try:
            async with asyncio.timeout(attempt_seconds(deadline_seconds, deadline)):
                response = await _open_checked(client, checked, hosts, http_timeout)
                try:
                    status = response.status_code
                    if is_transient_status(status):
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
                        raise TransientStatus(status, retry_after)
                    if status != 200:
                        raise ProviderRejected(f"the output host answered {status}")
                    return await _read_capped(response, max_bytes)
                finally:
                    await response.aclose()
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
        return await call_with_retries(attempt, policy, "download", deadline)
    except OutputRefused as refusal:
        _refused(refusal)
    except UNAVAILABLE_ERRORS as exc:
        raise unavailable(exc, "download", "output download", host=host) from None


def _refused(refusal: OutputRefused) -> NoReturn:
    # The host only: the path and query of an output URL may carry a signature.
    _log.warning("provider.output_refused", host=refusal.host, reason=str(refusal))
    raise refusal
