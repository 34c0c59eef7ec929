"""What the domain needs from an image provider, in our own terms.

The Replicate adapter (``generation.providers.replicate``) implements
:class:`ImageProvider`; it is the only module that knows Replicate's field names.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class ProviderStatus(enum.StrEnum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    # Replicate: a Cancel-After deadline passed before the run started. Terminal.
    ABORTED = "aborted"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        ProviderStatus.SUCCEEDED,
        ProviderStatus.FAILED,
        ProviderStatus.CANCELED,
        ProviderStatus.ABORTED,
    }
)


@dataclass(frozen=True)
class PredictionRequest:
    """A job as the provider should run it."""

    prompt: str
    # Signed URLs of the input images, in order (0..2).
    image_urls: tuple[str, ...]
    # Absolute URL the provider posts events to.
    webhook_url: str
    webhook_events: tuple[str, ...]
    output_format: str = "jpg"
    # The provider itself stops the run this many seconds after the create, whatever
    # became of our record of it (Replicate's ``Cancel-After``: ``aborted`` and not
    # billed before its start, ``canceled`` while it runs). None: no deadline.
    cancel_after_seconds: int | None = None


@dataclass(frozen=True)
class Prediction:
    """The provider's view of one prediction, normalized."""

    id: str
    status: ProviderStatus
    # Output file URLs, in order; empty when there is none (yet, or removed).
    output_urls: tuple[str, ...]
    # True when the provider reported an error (its text is never kept).
    has_error: bool
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    # True when the provider already deleted inputs and outputs.
    data_removed: bool = False
    # The webhook URL the run was created with, when the provider echoes it (it does in
    # its prediction objects, and in a webhook's body that is under the signature);
    # "" when the field is there but is no URL, None when it is absent.
    webhook_url: str | None = None


@dataclass(frozen=True)
class Deadline:
    """The moment a caller stops waiting for provider calls, on ``clock``'s time line."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        """Seconds left; zero or less once passed."""
        return self.at - self.clock()


# Set by the servicer for the RPC being served (each grpc.aio call runs in its own
# task, so the value never leaks into another call or into background work started
# before it). None: no caller is waiting (the sweep), only the retry policy limits.
_CALL_DEADLINE: ContextVar[Deadline | None] = ContextVar("provider_call_deadline", default=None)


@contextmanager
def provider_deadline(deadline: Deadline | None) -> Iterator[None]:
    """Provider calls made inside this block end (retries included) by ``deadline``."""
    token = _CALL_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _CALL_DEADLINE.reset(token)


def current_deadline() -> Deadline | None:
    """The deadline set by :func:`provider_deadline` around the current call, if any."""
    return _CALL_DEADLINE.get()


class ProviderError(Exception):
    """Base of provider failures; messages never reach a client."""


class ProviderUnavailable(ProviderError):
    """429, 5xx, timeouts or connection errors that outlasted the retries."""


class ProviderRejected(ProviderError):
    """The provider refused the call (a 4xx other than 429); retrying will not help."""


class PredictionNotFound(ProviderRejected):
    """The provider does not know this prediction id (404)."""


class OutputRefused(ProviderRejected):
    """An output never to be accepted: its URL outside the provider's delivery hosts
    (never fetched), or the file over the size cap or compressed. Never retried.

    ``host`` is the only part of the URL fit for logs (the rest may carry a signature).
    """

    def __init__(self, reason: str, *, host: str | None) -> None:
        super().__init__(reason)
        self.host = host


class InvalidProviderPayload(ProviderError):
    """An event or answer that is not a prediction we can read."""


class ImageProvider(Protocol):
    """The calls the generation service makes to an image provider."""

    async def create_prediction(self, request: PredictionRequest) -> Prediction:
        """Start a prediction. Retries transient failures itself."""
        ...

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """The prediction's current state."""
        ...

    async def cancel_prediction(self, prediction_id: str) -> Prediction:
        """Ask the provider to stop; answers the resulting state."""
        ...

    def parse_event(self, payload: bytes) -> Prediction:
        """Read a webhook body (raises :class:`InvalidProviderPayload`)."""
        ...

    async def download_output(self, url: str, max_bytes: int) -> bytes:
        """Fetch one output file (timeout, size cap, retries)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
