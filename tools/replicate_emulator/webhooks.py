"""Webhook delivery: one ordered queue per prediction, signed, retried like Replicate.

``output`` and ``logs`` events are throttled as Replicate's runner does (one per
500 ms; one that comes sooner is dropped, not delayed). Only the terminal
(``completed``) delivery is retried (connection error or any
non-2xx, exponential backoff, same ``webhook-id``); intermediate ones are sent
once. Redirects are never followed. Deliveries run in background tasks, so API
answers never wait for a receiver. Fault knobs can drop, duplicate or reorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from kit.logging import get_logger
from replicate_emulator.config import EmulatorConfig
from replicate_emulator.delivery_log import DeliveryLog, WebhookMessage
from replicate_emulator.faults import FaultState
from replicate_emulator.prediction import Prediction
from replicate_emulator.signing import SignedHeaders, new_message_id, sign
from replicate_emulator.tls import client_tls_context

_log = get_logger("replicate_emulator.webhooks")
THROTTLED = frozenset({"output", "logs"})


@dataclass
class _Channel:
    """The queue of one prediction's webhooks and the task draining it."""

    reorder: bool
    queue: asyncio.Queue[WebhookMessage] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class WebhookDispatcher:
    """Sends webhooks for predictions and keeps a log of every attempt."""

    def __init__(self, config: EmulatorConfig, faults: FaultState) -> None:
        self._config = config
        self._faults = faults
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=config.webhook_timeout_seconds,
            verify=client_tls_context(),
        )
        self._channels: dict[str, _Channel] = {}
        self.log = DeliveryLog()

    def emit(self, prediction: Prediction, event: str) -> None:
        """Queue ``event`` for ``prediction`` with its current JSON, if it asked for it
        and the throttle lets it through (``output`` and ``logs`` at most once per
        interval after the last event sent; ``start`` and ``completed`` always)."""
        if prediction.webhook is None or not prediction.wants(event):
            return
        now = time.monotonic()
        if event in THROTTLED and now - prediction.webhook_sent_at < (
            self._config.webhook_throttle_seconds
        ):
            _log.debug("webhook.throttled", predictionId=prediction.id, webhookEvent=event)
            return
        prediction.webhook_sent_at = now
        body = self.log.encode(prediction.to_json(self._config.base_url))
        message = WebhookMessage(prediction.id, event, prediction.webhook, body, new_message_id())
        self.log.remember(message)
        channel = self._channels.get(prediction.id)
        if channel is None:
            channel = _Channel(reorder=self._faults.faults.reorder_webhooks)
            self._channels[prediction.id] = channel
            channel.task = asyncio.create_task(self._drain(prediction.id, channel))
        channel.queue.put_nowait(message)

    async def _drain(self, prediction_id: str, channel: _Channel) -> None:
        held: list[WebhookMessage] = []
        try:
            while True:
                message = await channel.queue.get()
                if channel.reorder and not message.terminal:
                    held.append(message)  # sent after the terminal one
                    continue
                await self._deliver(message)
                for earlier in held:
                    await self._deliver(earlier)
                held.clear()
                if message.terminal:
                    return
        finally:
            if self._channels.get(prediction_id) is channel:
                del self._channels[prediction_id]

    async def _deliver(self, message: WebhookMessage) -> None:
        if self._faults.take_drop():
            self.log.add(message, attempt=1, kind="dropped", headers=None, status=None, error=None)
            _log.info(
                "webhook.dropped", predictionId=message.prediction_id, webhookEvent=message.event
            )
            return
        attempts = self._config.webhook_max_attempts if message.terminal else 1
        for attempt in range(1, attempts + 1):
            kind = "delivery" if attempt == 1 else "retry"
            if await self._attempt(message, attempt, kind) or attempt == attempts:
                break
            await asyncio.sleep(self._config.webhook_retry_base_seconds * 2 ** (attempt - 1))
        for _ in range(self._faults.faults.duplicate_webhooks):
            await self._attempt(message, 1, "duplicate")

    async def _attempt(
        self, message: WebhookMessage, attempt: int, kind: str, headers: SignedHeaders | None = None
    ) -> bool:
        headers = headers or sign(self._config.webhook_secret, message.webhook_id, message.body)
        if message.first is None:
            message.first = headers
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                message.url, content=message.body, headers=headers.as_dict()
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self.log.add(
            message, attempt=attempt, kind=kind, headers=headers, status=status, error=error
        )
        _log.info(
            "webhook.attempt",
            predictionId=message.prediction_id,
            webhookEvent=message.event,
            attempt=attempt,
            kind=kind,
            statusCode=status,
            error=error,
        )
        return status is not None and 200 <= status < 300

    async def redeliver(
        self, prediction_id: str, event: str, webhook_id: str | None = None
    ) -> dict[str, object] | None:
        """Replay a past delivery byte for byte (same id, timestamp, signature)."""
        message = self.log.find(prediction_id, event, webhook_id)
        if message is None:
            return None
        headers = message.first or sign(
            self._config.webhook_secret, message.webhook_id, message.body
        )
        await self._attempt(message, 1, "redelivery", headers)
        return self.log.entries[-1]

    async def reset(self) -> None:
        """Stop every queue and forget every delivery."""
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            if channel.task is not None:
                channel.task.cancel()
        for channel in channels:
            if channel.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task
        self.log.clear()

    async def close(self) -> None:
        """Stop deliveries and close the HTTP client."""
        await self.reset()
        await self._client.aclose()
