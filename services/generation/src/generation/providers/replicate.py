"""The Replicate adapter: the only module that knows Replicate's HTTP API and field names.

Calls go through one pooled ``httpx.AsyncClient`` with timeouts on every call and
are retried on 429, 5xx, timeouts and connection errors (full-jitter exponential
backoff, honouring ``Retry-After``), never on other 4xx; creates only on 429, 5xx and
connections never made (below). Inside an RPC the caller's deadline
(:func:`generation.domain.provider.current_deadline`) bounds the attempts and their
waits. Output files are fetched by a second client that reaches only the
delivery hosts at public addresses (``replicate_download``, ``output_hosts``,
``output_addresses``).

Creates are not retried after a read or write failure (a timeout included): the
request may have reached Replicate and started a run, and a retry would start a
second one on our account. The run it may have started names its job in its
webhooks, which adopt it or cancel it (domain/run_claims.py); a 429, a 5xx or a
connection that was never made cannot have started anything and is retried, as
REPLICATE.md advises.

Provider text (``detail``, ``title``, ``error``, ``logs``) never goes into
exception messages; only statuses and our own words do. It is logged at debug.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from generation import metrics
from generation.domain.provider import (
    Deadline,
    InvalidProviderPayload,
    Prediction,
    PredictionNotFound,
    PredictionRequest,
    ProviderRejected,
    current_deadline,
)
from generation.providers.async_library import settle_absent_sniffio
from generation.providers.output_addresses import Resolver, guarded_transport, resolve_host
from generation.providers.output_hosts import OutputHosts
from generation.providers.replicate_download import download_capped
from generation.providers.replicate_parsing import is_prediction_id, parse_prediction
from generation.providers.retries import (
    CREATE_RETRIED_ERRORS,
    MIN_ATTEMPT_SECONDS,
    TRANSIENT_ERRORS,
    UNAVAILABLE_ERRORS,
    RetryPolicy,
    TransientStatus,
    attempt_seconds,
    call_with_retries,
    is_transient_status,
    parse_retry_after,
    unavailable,
)
from kit.logging import get_logger
from kit.runtime_config import PROVIDER_BACKOFF_MAX_SECONDS
from kit.runtime_config import Replicate as ReplicateConfig

# Before any client is used: httpcore's per-request `import sniffio` must not search.
settle_absent_sniffio()

_log = get_logger("generation.providers.replicate")
_ACCEPTED = frozenset({200, 201, 202})
_MAX_CONNECTIONS = 50
_LIMITS = httpx.Limits(
    max_connections=_MAX_CONNECTIONS,
    max_keepalive_connections=_MAX_CONNECTIONS // 2,
    keepalive_expiry=30.0,
)
DEFAULT_OUTPUT_HOSTS = ReplicateConfig().output_hosts
# Paths as logged: ids go in their own field.
_CREATE_TEMPLATE = "/v1/models/{owner}/{name}/predictions"
_GET_TEMPLATE = "/v1/predictions/{id}"
_CANCEL_TEMPLATE = "/v1/predictions/{id}/cancel"
# Starts with a letter or digit, so "." and ".." can never become path segments.
_MODEL = re.compile(r"([a-z0-9][a-z0-9_.-]*)/([a-z0-9][a-z0-9_.-]*)")


def _model_path(model: str) -> str:
    match = _MODEL.fullmatch(model)
    if match is None:
        raise ValueError("model must look like 'owner/name' (lowercase)")
    owner, name = match.groups()
    return f"/v1/models/{owner}/{name}/predictions"


def _problem_fields(response: httpx.Response) -> dict[str, str]:
    """Replicate's problem text, trimmed, for debug logs only."""
    try:
        document = response.json()
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {key: str(document[key])[:300] for key in ("title", "detail") if key in document}


# Longest wait for a connection (or a free pooled one) within an attempt.
CONNECT_SECONDS = 3.0


# Replicate refuses a Cancel-After under five seconds.
MIN_CANCEL_AFTER_SECONDS = 5


def cancel_after(seconds: int) -> str:
    """A ``Cancel-After`` value in Replicate's form: 30s, 5m, 1h2m3s (at least 5s)."""
    hours, rest = divmod(max(seconds, MIN_CANCEL_AFTER_SECONDS), 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{value}{unit}" for value, unit in parts if value)


def attempt_timeout(seconds: float) -> httpx.Timeout:
    """httpx's per-phase timeouts for an attempt bounded to ``seconds`` in all.

    Connecting, and waiting for a pooled connection, get at most half of it, so a
    connection that is never made fails as httpx's ``ConnectTimeout`` / ``PoolTimeout``,
    which a create may retry (nothing was sent), before the attempt's own timeout,
    which it may not (the request may have reached Replicate).
    """
    budget = min(CONNECT_SECONDS, seconds / 2)
    return httpx.Timeout(seconds, connect=budget, pool=budget)


class ReplicateProvider:
    """:class:`generation.domain.provider.ImageProvider` backed by Replicate's HTTP API."""

    def __init__(
        self,
        base_url: str,
        api_token: str,
        model: str,
        *,
        timeout_seconds: float,
        max_attempts: int,
        http_client: httpx.AsyncClient | None = None,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = PROVIDER_BACKOFF_MAX_SECONDS,
        download_deadline_seconds: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        output_hosts: tuple[str, ...] = DEFAULT_OUTPUT_HOSTS,
        download_client: httpx.AsyncClient | None = None,
        resolver: Resolver = resolve_host,
    ) -> None:
        if not api_token:
            raise ValueError("api_token must not be empty")
        if timeout_seconds <= 0 or download_deadline_seconds <= 0:
            raise ValueError("timeouts must be positive")
        self._base_url = base_url.rstrip("/")
        self._create_path = _model_path(model)
        # Sent per request, to the API host only: a client default could leak the
        # token to any host the client were ever pointed at.
        self._api_headers = {"Authorization": f"Bearer {api_token}", "Accept": "application/json"}
        self._timeout_seconds = timeout_seconds
        self._timeout = httpx.Timeout(timeout_seconds)
        self._download_deadline = download_deadline_seconds
        self._policy = RetryPolicy(max_attempts, backoff_base_seconds, backoff_max_seconds, sleep)
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=self._timeout, limits=_LIMITS)
        # Outputs come from URLs a webhook names: their own client, whose every
        # connection checks the resolved address, and no proxy from the environment.
        self._output_hosts = OutputHosts(output_hosts, api_base_url=self._base_url)
        self._owns_download_client = download_client is None
        self._download_client = download_client or httpx.AsyncClient(
            timeout=self._timeout,
            trust_env=False,
            transport=guarded_transport(self._output_hosts.trusted_origin, _LIMITS, resolver),
        )

    async def create_prediction(self, request: PredictionRequest) -> Prediction:
        """Start a prediction of the configured model; retries transient failures."""
        body: dict[str, Any] = {
            "input": {
                "prompt": request.prompt,
                "image_input": list(request.image_urls),
                "output_format": request.output_format,
            }
        }
        if request.webhook_url:
            body["webhook"] = request.webhook_url
            body["webhook_events_filter"] = list(request.webhook_events)
        headers = self._api_headers
        if request.cancel_after_seconds is not None:
            headers = {**headers, "Cancel-After": cancel_after(request.cancel_after_seconds)}
        return await self._call(
            "POST",
            self._create_path,
            _CREATE_TEMPLATE,
            "create",
            body=body,
            retried=CREATE_RETRIED_ERRORS,
            headers=headers,
            # Not idempotent: never sent without the time to carry its answer back.
            min_attempt_seconds=MIN_ATTEMPT_SECONDS,
        )

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """The prediction's current state (404 -> :class:`PredictionNotFound`)."""
        path = f"/v1/predictions/{self._checked_id(prediction_id)}"
        return await self._call("GET", path, _GET_TEMPLATE, "get", prediction_id=prediction_id)

    async def cancel_prediction(self, prediction_id: str) -> Prediction:
        """Ask Replicate to stop the prediction; answers its resulting state."""
        path = f"/v1/predictions/{self._checked_id(prediction_id)}/cancel"
        template = _CANCEL_TEMPLATE
        return await self._call("POST", path, template, "cancel", prediction_id=prediction_id)

    def parse_event(self, payload: bytes) -> Prediction:
        """Read a webhook body (raises :class:`InvalidProviderPayload`)."""
        return parse_prediction(payload)

    async def download_output(self, url: str, max_bytes: int) -> bytes:
        """Fetch one output file from a delivery host: no credentials, a size cap, retries.

        Raises :class:`OutputRefused` (never retried) for any other host or address.
        The caller's deadline (:func:`current_deadline`) bounds the attempts.
        """
        return await download_capped(
            self._download_client,
            url,
            max_bytes,
            hosts=self._output_hosts,
            policy=self._policy,
            http_timeout=self._timeout,
            deadline_seconds=self._download_deadline,
            deadline=current_deadline(),
        )

    async def aclose(self) -> None:
        """Close the pooled clients this adapter created."""
        if self._owns_client:
            await self._client.aclose()
        if self._owns_download_client:
            await self._download_client.aclose()

    @staticmethod
    def _checked_id(prediction_id: str) -> str:
        # Never put an unchecked id into a URL path; an impossible id is unknown.
        if not is_prediction_id(prediction_id):
            raise PredictionNotFound("not a Replicate prediction id")
        return quote(prediction_id, safe="")

    async def _call(
        self,
        method: str,
        path: str,
        template: str,
        operation: str,
        *,
        body: dict[str, Any] | None = None,
        prediction_id: str | None = None,
        retried: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
        headers: dict[str, str] | None = None,
        min_attempt_seconds: float = 0.0,
    ) -> Prediction:
        context = {
            "operation": operation,
            "method": method,
            "path": template,
            "predictionId": prediction_id,
        }
        # The caller's deadline (the RPC's, less a margin) bounds the retries too.
        deadline: Deadline | None = current_deadline()

        async def attempt(number: int) -> httpx.Response:
            started = time.perf_counter()
            outcome: dict[str, object] = {}
            seconds = attempt_seconds(self._timeout_seconds, deadline, min_attempt_seconds)
            try:
                # httpx's timeout applies per phase (connect, write, read); the outer
                # one bounds the whole attempt.
                async with asyncio.timeout(seconds):
                    response = await self._client.request(
                        method,
                        self._base_url + path,
                        json=body,
                        headers=headers or self._api_headers,
                        timeout=attempt_timeout(seconds),
                        follow_redirects=False,
                    )
                outcome["status"] = response.status_code
            except (httpx.HTTPError, TimeoutError) as exc:
                outcome["error"] = type(exc).__name__
                raise
            finally:
                elapsed_ms = round((time.perf_counter() - started) * 1000)
                metrics.provider_call(operation, outcome.get("status"), elapsed_ms / 1000)
                _log.info(
                    "provider.call", **context, **outcome, attempt=number, durationMs=elapsed_ms
                )
            if is_transient_status(response.status_code):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                raise TransientStatus(response.status_code, retry_after)
            return response

        try:
            response = await call_with_retries(attempt, self._policy, operation, deadline, retried)
        except UNAVAILABLE_ERRORS as exc:
            fields = {name: value for name, value in context.items() if name != "operation"}
            raise unavailable(exc, operation, f"Replicate {operation}", **fields) from None
        return self._prediction_or_error(response, operation, context)

    @staticmethod
    def _prediction_or_error(
        response: httpx.Response, operation: str, context: dict[str, Any]
    ) -> Prediction:
        status = response.status_code
        if status in _ACCEPTED:
            try:
                return parse_prediction(response.content)
            except InvalidProviderPayload:
                _log.warning("provider.invalid_answer", **context, status=status)
                raise
        _log.debug("provider.rejected", **context, status=status, **_problem_fields(response))
        if status == 404:
            raise PredictionNotFound(f"Replicate answered 404 to {operation}")
        raise ProviderRejected(f"Replicate answered {status} to {operation}")
