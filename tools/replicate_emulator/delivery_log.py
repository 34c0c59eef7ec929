"""The record of webhook messages and of every delivery attempt, for assertions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from replicate_emulator.prediction import now_utc
from replicate_emulator.signing import SignedHeaders


@dataclass
class WebhookMessage:
    """One event of one prediction: the body is fixed when the event happens."""

    prediction_id: str
    event: str
    url: str
    body: bytes
    webhook_id: str
    # Headers of the first attempt, replayed as they were by a redelivery.
    first: SignedHeaders | None = None

    @property
    def terminal(self) -> bool:
        """Only the ``completed`` event is retried."""
        return self.event == "completed"


class DeliveryLog:
    """Messages (for redelivery) and attempts (for ``GET /_emulator/webhooks``)."""

    def __init__(self) -> None:
        self.messages: list[WebhookMessage] = []
        self.entries: list[dict[str, Any]] = []

    @staticmethod
    def encode(body: dict[str, Any]) -> bytes:
        """The raw bytes sent and signed: the same bytes GET answers (compact UTF-8 JSON,
        non-ASCII text as itself, as Starlette's JSONResponse renders it)."""
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8"
        )

    def remember(self, message: WebhookMessage) -> None:
        """Keep ``message`` for a later redelivery."""
        self.messages.append(message)

    def find(
        self, prediction_id: str, event: str, webhook_id: str | None = None
    ) -> WebhookMessage | None:
        """The latest message matching the arguments, or None."""
        for message in reversed(self.messages):
            if message.prediction_id != prediction_id or message.event != event:
                continue
            if webhook_id is None or message.webhook_id == webhook_id:
                return message
        return None

    def add(
        self,
        message: WebhookMessage,
        *,
        attempt: int,
        kind: str,
        headers: SignedHeaders | None,
        status: int | None,
        error: str | None,
    ) -> None:
        """Record one attempt; ``kind`` is delivery, retry, duplicate, redelivery or dropped."""
        self.entries.append(
            {
                "prediction_id": message.prediction_id,
                "event": message.event,
                "webhook_id": message.webhook_id,
                "webhook_timestamp": headers.timestamp if headers else None,
                "attempt": attempt,
                "kind": kind,
                "status_code": status,
                "error": error,
                "at": now_utc().isoformat(),
            }
        )

    def clear(self) -> None:
        """Forget everything."""
        self.messages.clear()
        self.entries.clear()
