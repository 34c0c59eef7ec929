"""The signing keys of asymmetric user tokens, read from a JWKS URL (Supabase signing keys).

Keys are fetched with ``httpx.AsyncClient`` (never blocking the event loop), cached
by ``kid`` and refetched when a token names a ``kid`` the cache lacks, at most once
per ``min_refetch_seconds``: a flood of made-up kids costs the JWKS host one request
per interval. Keys older than ``max_age_seconds`` are refetched when next used, so a
key the provider revoked stops working: in the background, while the cached key still
answers (stale-while-revalidate), so no request waits on the JWKS host for a key it
has; a slow or unreachable host would otherwise hold every request for up to the
fetch timeout, once per refetch interval. A failed fetch keeps the cached keys, so an
outage neither admits a bad token nor refuses a good one whose key is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from kit.logging import get_logger

log = get_logger("edge_api.jwks")

# Each key type verifies with exactly one algorithm: no HS, no other curve or hash.
ALGORITHM_OF_KEY_TYPE = {"RSA": "RS256", "EC": "ES256"}
# A JWKS holds a handful of keys; anything far larger is not one.
MAX_DOCUMENT_BYTES = 64 * 1024


class JwksError(Exception):
    """The JWKS could not be fetched or held no usable key (the text names no secret)."""


class JwksKeys:
    """Cached signing keys of one JWKS URL, by ``kid``."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        min_refetch_seconds: float,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout = timeout_seconds
        self._min_refetch = min_refetch_seconds
        self._max_age = max_age_seconds
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._last_attempt: float | None = None
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._revalidating: asyncio.Task[bool] | None = None

    @property
    def kids(self) -> frozenset[str]:
        """The ids of the cached keys."""
        return frozenset(self._keys)

    async def refresh(self) -> bool:
        """Fetch the keys now (start-up); False (logged) when the fetch failed."""
        async with self._lock:
            return await self._fetch()

    async def key(self, kid: str) -> PyJWK | None:
        """The key named ``kid``: cached (refetched in the background once old), or
        refetched now if the rate limit allows."""
        if (cached := self._keys.get(kid)) is not None:
            if self._stale() and self._may_refetch():
                self._revalidate()
            return cached
        async with self._lock:
            # Another request may have refetched while this one waited for the lock.
            if kid not in self._keys and self._may_refetch():
                await self._fetch()
            return self._keys.get(kid)

    async def revalidated(self) -> None:
        """Wait for the background refetch under way, if any."""
        if self._revalidating is not None:
            await asyncio.shield(self._revalidating)

    async def aclose(self) -> None:
        """Stop a background refetch under way (the app is stopping)."""
        if self._revalidating is not None:
            self._revalidating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._revalidating

    def _revalidate(self) -> None:
        if self._revalidating is None or self._revalidating.done():
            # Counted as an attempt now: the requests until it ends start no other.
            self._last_attempt = self._clock()
            self._revalidating = asyncio.get_running_loop().create_task(self.refresh())

    def _stale(self) -> bool:
        fetched = self._fetched_at
        return fetched is not None and self._clock() - fetched >= self._max_age

    def _may_refetch(self) -> bool:
        last = self._last_attempt
        return last is None or self._clock() - last >= self._min_refetch

    async def _fetch(self) -> bool:
        # Failures count as attempts too: an outage must not turn into a request storm.
        self._last_attempt = self._clock()
        try:
            keys = parse_keys(await self._download())
        except JwksError as error:
            log.warning("edge.jwks_fetch_failed", reason=str(error), cachedKeys=len(self._keys))
            return False
        self._keys, self._fetched_at = keys, self._clock()
        log.info("edge.jwks_fetched", kids=sorted(keys))
        return True

    async def _download(self) -> Any:
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
                client.stream("GET", self._url, headers={"Accept": "application/json"}) as reply,
            ):
                if reply.status_code != 200:
                    raise JwksError(f"HTTP {reply.status_code}")
                body = bytearray()
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise JwksError("the document is too large")
        except httpx.HTTPError as error:
            raise JwksError(type(error).__name__) from None
        try:
            return json.loads(body)
        except ValueError:
            raise JwksError("the document is not JSON") from None


def parse_keys(document: Any) -> dict[str, PyJWK]:
    """The usable signing keys of a JWKS document by ``kid``; JwksError when none is."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the document has no 'keys' list")
    keys: dict[str, PyJWK] = {}
    for entry in entries:
        key = _signing_key(entry)
        if key is not None and key.key_id is not None:
            keys[key.key_id] = key
    if not keys:
        raise JwksError("the document holds no usable RS256/ES256 signing key with a kid")
    return keys


def _signing_key(entry: Any) -> PyJWK | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    algorithm = ALGORITHM_OF_KEY_TYPE.get(str(entry.get("kty")))
    if algorithm is None or entry.get("alg", algorithm) != algorithm:
        return None
    if entry["kty"] == "EC" and entry.get("crv") != "P-256":
        return None  # ES256 is P-256 only
    try:
        return PyJWK(entry, algorithm)
    except (PyJWTError, ValueError, TypeError):
        # Malformed (PyJWT says so with InvalidKeyError, which is no PyJWKError):
        # skipped, never trusted; the document's other keys still count.
        return None
