"""The prediction record and its JSON shape, exactly as Replicate's API renders it."""

from __future__ import annotations

import asyncio
import math
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MODEL = "google/nano-banana"
VERSION = "hidden"  # what Replicate shows for official models
WEB_BASE = "https://replicate.com/p"
EVENTS = ("start", "output", "logs", "completed")
# Without a webhook_events_filter Replicate sends "whenever there are new outputs or the
# prediction has finished" (its docs): no start, no logs.
DEFAULT_EVENTS = ("output", "completed")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_prediction_id() -> str:
    """26 lowercase alphanumerics, like Replicate's ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def rfc3339(moment: datetime, digits: int = 9) -> str:
    """UTC RFC 3339 with ``Z`` and at most ``digits`` fractional digits (0..9).

    Printed the way Go's RFC3339Nano does (Replicate's API is written in Go): the
    fraction's trailing zeros are dropped, and with them the dot when nothing is
    left. Python has microseconds; the nanoseconds below them are made up. The
    engine truncates some timestamps to fewer digits, so clients must parse 0 to 9.
    """
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    # The made-up nanoseconds end in a non-zero digit, so nine digits stay nine.
    nanos = f"{secrets.randbelow(100):02d}{1 + secrets.randbelow(9)}"
    fraction = f"{moment.microsecond:06d}{nanos}"[:digits].rstrip("0")
    return text + ("." + fraction if fraction else "") + "Z"


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
    # None (JSON null) until the run starts, as Replicate shows a starting prediction.
    logs: str | None = None
    error: str | None = None
    data_removed: bool = False
    started: datetime | None = None
    started_at: str | None = None
    completed: datetime | None = None
    completed_at: str | None = None
    forced_failure: bool = False
    # time.monotonic() of the last webhook event queued (the throttle's reference).
    webhook_sent_at: float = -math.inf
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change."""
        return self.status in TERMINAL

    def wants(self, event: str) -> bool:
        """Whether a webhook should be sent for ``event``."""
        if self.webhook is None:
            return False
        if self.webhook_events_filter is None:
            return event in DEFAULT_EVENTS
        return event in self.webhook_events_filter

    def metrics(self) -> dict[str, float]:
        """predict_time and total_time once finished; ``{}`` before."""
        if self.completed is None:
            return {}
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
            # null until set, as Replicate's own example of a starting prediction shows.
            "started_at": self.started_at,
            "completed_at": self.completed_at,
        }
        body["urls"] = {
            "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
            "get": f"{base_url}/v1/predictions/{self.id}",
            "web": f"{WEB_BASE}/{self.id}",
        }
        body["metrics"] = self.metrics()
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
