"""The prediction lifecycle, driven by asyncio tasks.

``starting`` -(start delay)-> ``processing`` -(run delay)-> ``succeeded`` (or
``failed``), with cancel, Cancel-After deadlines (``aborted`` before the start),
the ``hold`` knob and explicit advances from the control API. Every state change
happens synchronously between awaits, so no locks are needed on the one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import httpx

from kit.logging import get_logger
from replicate_emulator.config import EmulatorConfig
from replicate_emulator.faults import FaultState
from replicate_emulator.files import OutputFiles
from replicate_emulator.prediction import Prediction, new_prediction_id, now_utc, rfc3339
from replicate_emulator.tls import client_tls_context
from replicate_emulator.validation import CreateRequest
from replicate_emulator.webhooks import WebhookDispatcher
from replicate_emulator.work import GENERATING_LOG, Outcome, produce

_log = get_logger("replicate_emulator.engine")
FORCED_FAILURE = "E6716: Prediction failed: the model returned an error (injected by the emulator)"
ADVANCED_FAILURE = "Prediction failed (advanced by the emulator control API)"
# Fractional digits of successive predictions' created_at: Replicate's timestamps carry
# 0 to 9, so every client parse meets each width within a few predictions. Truncation
# only moves created_at earlier, never after the prediction's later timestamps.
_CREATED_AT_DIGITS = itertools.cycle((6, 9, 0, 3, 1, 8))


class AdvanceRefused(Exception):
    """The prediction cannot move to the requested status."""


class Engine:
    """Holds every prediction and moves them through their statuses."""

    def __init__(
        self,
        config: EmulatorConfig,
        faults: FaultState,
        webhooks: WebhookDispatcher,
        files: OutputFiles,
    ) -> None:
        self._config = config
        self._faults = faults
        self._webhooks = webhooks
        self._files = files
        self._predictions: dict[str, Prediction] = {}
        self._work: dict[str, asyncio.Task[Outcome]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fetcher = httpx.AsyncClient(
            timeout=config.fetch_timeout_seconds,
            follow_redirects=True,
            verify=client_tls_context(),
        )

    # -- API operations -------------------------------------------------------------

    def create(self, request: CreateRequest, cancel_after: float | None) -> Prediction:
        """Register a new prediction and start driving it."""
        created = now_utc()
        prediction = Prediction(
            id=new_prediction_id(),
            input=request.input,
            created=created,
            created_at=rfc3339(created, next(_CREATED_AT_DIGITS)),
            webhook=request.webhook,
            webhook_events_filter=request.webhook_events_filter,
            forced_failure=self._faults.take_failure(),
        )
        if cancel_after is not None:  # at least the minimum: the API refused less
            seconds = cancel_after
            prediction.deadline = created + timedelta(seconds=seconds)
            prediction.deadline_at = rfc3339(prediction.deadline, 3)
            self._spawn(self._watch_deadline(prediction, seconds))
        self._predictions[prediction.id] = prediction
        self._spawn(self._drive(prediction))
        _log.info("prediction.created", predictionId=prediction.id, status=prediction.status)
        return prediction

    def get(self, prediction_id: str) -> Prediction | None:
        """The prediction, or None."""
        return self._predictions.get(prediction_id)

    def all(self) -> list[Prediction]:
        """Every prediction, oldest first."""
        return list(self._predictions.values())

    def cancel(self, prediction_id: str) -> Prediction | None:
        """Cancel unless terminal (a terminal prediction is returned unchanged)."""
        prediction = self._predictions.get(prediction_id)
        if prediction is not None and not prediction.terminal:
            self._finish(prediction, "canceled")
        return prediction

    async def advance(self, prediction: Prediction, status: str) -> None:
        """Move ``prediction`` to ``status`` now, for deterministic tests.

        ``status`` is processing, succeeded, failed, canceled or aborted (checked by
        the caller). A forced success still fails if an input cannot be fetched.
        """
        if prediction.terminal:
            raise AdvanceRefused(f"prediction is already {prediction.status}")
        if status == "aborted":
            if prediction.status != "starting":
                raise AdvanceRefused("only a starting prediction can be aborted")
            self._finish(prediction, "aborted")
        elif status == "canceled":
            self._finish(prediction, "canceled")
        else:  # processing, succeeded or failed: all go through the start first
            self._start(prediction)
            if status == "failed":
                self._finish(prediction, "failed", ADVANCED_FAILURE)
            elif status == "succeeded":
                self._settle(prediction, await self._work[prediction.id], honour_faults=False)

    # -- lifecycle ------------------------------------------------------------------

    def _seconds(self, knob_ms: int | None, default: float) -> float:
        return default if knob_ms is None else knob_ms / 1000.0

    async def _drive(self, prediction: Prediction) -> None:
        knobs = self._faults.faults
        await asyncio.sleep(self._seconds(knobs.start_delay_ms, self._config.start_delay_seconds))
        if prediction.status != "starting":
            return
        if prediction.deadline is not None and now_utc() >= prediction.deadline:
            self._finish(prediction, "aborted")
            return
        self._start(prediction)
        work = self._work[prediction.id]
        knobs = self._faults.faults
        await asyncio.sleep(self._seconds(knobs.run_delay_ms, self._config.run_delay_seconds))
        await self._faults.released.wait()  # the `hold` knob
        self._settle(prediction, await work, honour_faults=True)

    async def _watch_deadline(self, prediction: Prediction, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if prediction.status == "starting":
            self._finish(prediction, "aborted")
        elif prediction.status == "processing":
            self._finish(prediction, "canceled")

    def _start(self, prediction: Prediction) -> None:
        if prediction.status != "starting":
            return
        started = now_utc()
        prediction.status = "processing"
        prediction.started = started
        prediction.started_at = rfc3339(started)
        self._webhooks.emit(prediction, "start")
        prediction.logs = GENERATING_LOG
        self._webhooks.emit(prediction, "logs")
        self._work[prediction.id] = self._spawn(
            produce(self._fetcher, prediction.id, prediction.input, self._config.max_input_bytes)
        )
        _log.info("prediction.status", predictionId=prediction.id, status=prediction.status)

    def _settle(self, prediction: Prediction, outcome: Outcome, *, honour_faults: bool) -> None:
        if prediction.terminal:
            return
        if outcome.file is None:
            self._finish(prediction, "failed", outcome.error)
            return
        if honour_faults and prediction.forced_failure:
            self._finish(prediction, "failed", FORCED_FAILURE)
            return
        self._files.put(prediction.id, outcome.file)
        elapsed = (now_utc() - (prediction.started or prediction.created)).total_seconds()
        prediction.logs = (prediction.logs or "") + f"Generated image in {elapsed:.2f} seconds\n"
        self._webhooks.emit(prediction, "logs")
        url = f"{self._config.base_url}/files/{prediction.id}/{outcome.file.name}"
        shape = self._faults.faults.output_shape
        prediction.output = {"string": url, "list": [url], "null": None}[shape]
        # A model that returns one value sends no ``output`` event (the runner sends one
        # per item of an iterator): the output first shows in ``completed``.
        if shape == "list":
            self._webhooks.emit(prediction, "output")
        self._finish(prediction, "succeeded")

    def _finish(self, prediction: Prediction, status: str, error: str | None = None) -> None:
        completed = now_utc()
        prediction.status = status
        prediction.error = error
        prediction.completed = completed
        prediction.completed_at = rfc3339(completed)
        prediction.done.set()
        # A run still in flight finishes on its own; _settle ignores terminal predictions.
        self._work.pop(prediction.id, None)
        self._webhooks.emit(prediction, "completed")
        self._spawn(self._expire(prediction))
        _log.info("prediction.status", predictionId=prediction.id, status=status)

    async def _expire(self, prediction: Prediction) -> None:
        knob = self._faults.faults.data_retention_seconds
        await asyncio.sleep(self._config.data_retention_seconds if knob is None else knob)
        # After the retention window Replicate deletes input, output and logs.
        prediction.data_removed = True
        prediction.output = None
        prediction.input = {}
        prediction.logs = ""
        self._files.delete(prediction.id)
        _log.info("prediction.data_removed", predictionId=prediction.id)

    # -- housekeeping ---------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reset(self) -> None:
        """Stop every task and forget every prediction."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._predictions.clear()
        self._work.clear()

    async def close(self) -> None:
        """Stop and release the HTTP client."""
        await self.reset()
        await self._fetcher.aclose()
