"""The prediction record and its JSON shape, exactly as Replicate's API renders it."""

from __future__ import annotations

import asyncio
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MODEL = "google/nano-banana"
VERSION = "hidden"  # what Replicate shows for official models
WEB_BASE = "https://replicate.com/p"
EVENTS = ("start", "output", "logs", "completed")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_prediction_id() -> str:
    """26 lowercase alphanumerics, like Replicate's ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def rfc3339(moment: datetime, digits: int) -> str:
    """UTC RFC 3339 with ``Z`` and ``digits`` fractional digits (0..9).

    Replicate's timestamps carry anywhere from 0 to 9 fractional digits; the
    emulator uses several widths on purpose so clients must parse them all.
    """
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits > 0:
        # Python has microseconds; pad to nanoseconds the way Go would print them.
        nanos = f"{moment.microsecond:06d}{secrets.randbelow(1000):03d}"
        text += "." + nanos[:digits]
    return text + "Z"


@dataclass
class Prediction:
    """One prediction's mutable state; only the engine changes it."""

    id: str
    input: dict[str, Any]
    created: datetime
    created_at: str
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    deadline: datetime | None = None
    deadline_at: str | None = None
    status: str = "starting"
    output: Any = None
    logs: str = ""
    error: str | None = None
    data_removed: bool = False
    started: datetime | None = None
    started_at: str | None = None
    completed: datetime | None = None
    completed_at: str | None = None
    forced_failure: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change."""
        return self.status in TERMINAL

    def wants(self, event: str) -> bool:
        """Whether a webhook should be sent for ``event``."""
        if self.webhook is None:
            return False
        allowed = EVENTS if self.webhook_events_filter is None else self.webhook_events_filter
        return event in allowed

    def metrics(self) -> dict[str, float] | None:
        """predict_time and total_time once finished."""
        if self.completed is None:
            return None
        predict = (self.completed - self.started).total_seconds() if self.started else 0.0
        total = (self.completed - self.created).total_seconds()
        return {"predict_time": round(predict, 6), "total_time": round(total, 6)}

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The API shape: the same for GET, create, cancel and webhook bodies."""
        body: dict[str, Any] = {
            "id": self.id,
            "model": MODEL,
            "version": VERSION,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": self.data_removed,
            "error": self.error,
            "status": self.status,
            "created_at": self.created_at,
        }
        if self.started_at is not None:
            body["started_at"] = self.started_at
        if self.completed_at is not None:
            body["completed_at"] = self.completed_at
        body["urls"] = {
            "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
            "get": f"{base_url}/v1/predictions/{self.id}",
            "web": f"{WEB_BASE}/{self.id}",
        }
        metrics = self.metrics()
        if metrics is not None:
            body["metrics"] = metrics
        if self.deadline_at is not None:
            body["deadline"] = self.deadline_at
        if self.webhook is not None:
            body["webhook"] = self.webhook
        if self.webhook_events_filter is not None:
            body["webhook_events_filter"] = self.webhook_events_filter
        return body


def now_utc() -> datetime:
    """The current aware UTC time."""
    return datetime.now(UTC)
