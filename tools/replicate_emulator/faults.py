"""Fault knobs: what the control API can make the emulator do wrong (or slowly).

Knobs are set by ``POST /_emulator/faults`` with a partial JSON object (keys not
given keep their value) and cleared by ``POST /_emulator/reset``. Error queues are
consumed one entry per matching call.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OutputShape = Literal["string", "list", "null"]
# An injected HTTP status: only error statuses make sense.
ErrorStatus = Annotated[int, Field(ge=400, le=599)]


class Faults(BaseModel):
    """The knobs; defaults mean "behave like the real service"."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: int = Field(default=0, ge=0)
    # A create carried out (its run started) whose answer is this late: what a client
    # that times out sees when its request did reach the provider.
    create_answer_delay_ms: int = Field(default=0, ge=0)
    create_errors: list[ErrorStatus] = Field(default_factory=list)
    get_errors: list[ErrorStatus] = Field(default_factory=list)
    cancel_errors: list[ErrorStatus] = Field(default_factory=list)
    retry_after_seconds: float | None = Field(default=None, ge=0)
    fail_next: int = Field(default=0, ge=0)
    hold: bool = False
    drop_webhooks: int | Literal["all"] = 0
    duplicate_webhooks: int = Field(default=0, ge=0)
    reorder_webhooks: bool = False
    output_delay_ms: int = Field(default=0, ge=0)
    output_errors: list[ErrorStatus] = Field(default_factory=list)
    start_delay_ms: int | None = Field(default=None, ge=0)
    run_delay_ms: int | None = Field(default=None, ge=0)
    output_shape: OutputShape = "string"
    data_retention_seconds: float | None = Field(default=None, ge=0)


class FaultState:
    """The live knobs plus the helpers that consume them."""

    def __init__(self) -> None:
        self.faults = Faults()
        # Set while hold is off: held predictions wait on it to finish.
        self.released = asyncio.Event()
        self.released.set()

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply a partial update (validated as a whole) and return the result."""
        merged = Faults.model_validate({**self.faults.model_dump(), **changes})
        self.faults = merged
        self._sync_hold()
        return merged

    def reset(self) -> None:
        """Back to defaults."""
        self.faults = Faults()
        self._sync_hold()

    def _sync_hold(self) -> None:
        if self.faults.hold:
            self.released.clear()
        else:
            self.released.set()

    def take_error(self, queue: Literal["create", "get", "cancel", "output"]) -> int | None:
        """Pop the next injected status for ``queue``, if any."""
        statuses: list[int] = getattr(self.faults, f"{queue}_errors")
        return statuses.pop(0) if statuses else None

    def take_failure(self) -> bool:
        """True (and count down) when the next prediction must fail."""
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            return True
        return False

    def take_drop(self) -> bool:
        """True (and count down) when the next webhook delivery must be lost."""
        drop = self.faults.drop_webhooks
        if drop == "all":
            return True
        if drop > 0:
            self.faults.drop_webhooks = drop - 1
            return True
        return False
