"""A small typed client for the control API, used by tests of every package.

``emulator.control.set_faults(create_errors=[503, 503])``, ``.predictions()``,
``.advance(pid, "succeeded")``, ``.reset()`` and friends, one method per endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal, TypedDict, Unpack

import httpx

from replicate_emulator.tls import client_tls_context


class FaultKnobs(TypedDict, total=False):
    """The knobs of ``POST /_emulator/faults``; keys not given keep their value."""

    latency_ms: int
    create_answer_delay_ms: int
    create_errors: list[int]
    get_errors: list[int]
    cancel_errors: list[int]
    retry_after_seconds: float | None
    fail_next: int
    hold: bool
    drop_webhooks: int | Literal["all"]
    duplicate_webhooks: int
    reorder_webhooks: bool
    output_delay_ms: int
    output_errors: list[int]
    start_delay_ms: int | None
    run_delay_ms: int | None
    output_shape: Literal["string", "list", "null"]
    data_retention_seconds: float | None


class ControlError(Exception):
    """The control API refused a call."""


class ControlClient:
    """Synchronous client of ``{base_url}/_emulator``."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/_emulator",
            timeout=timeout,
            verify=client_tls_context(),
            # A connection per call: a kept one the server closed for idleness (uvicorn's
            # 5 s) can take the next call, which then fails with "Server disconnected
            # without sending a response" (seen in a fault test waiting between calls).
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def _call(self, method: str, path: str, body: object = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.is_error:
            raise ControlError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def set_faults(self, **knobs: Unpack[FaultKnobs]) -> dict[str, Any]:
        """Change the given knobs; returns every knob's value."""
        faults: dict[str, Any] = self._call("POST", "/faults", dict(knobs))
        return faults

    def faults(self) -> dict[str, Any]:
        """Every knob's current value."""
        faults: dict[str, Any] = self._call("GET", "/faults")
        return faults

    def reset(self) -> None:
        """Clear knobs, predictions, files and the webhook log."""
        self._call("POST", "/reset")

    def predictions(self) -> list[dict[str, Any]]:
        """Every prediction, oldest first, in the API's JSON shape."""
        predictions: list[dict[str, Any]] = self._call("GET", "/predictions")
        return predictions

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """One prediction in the API's JSON shape."""
        prediction: dict[str, Any] = self._call("GET", f"/predictions/{prediction_id}")
        return prediction

    def advance(self, prediction_id: str, status: str) -> dict[str, Any]:
        """Move a prediction to processing/succeeded/failed/canceled/aborted now."""
        prediction: dict[str, Any] = self._call(
            "POST", f"/predictions/{prediction_id}/advance", {"status": status}
        )
        return prediction

    def webhooks(self, prediction_id: str | None = None) -> list[dict[str, Any]]:
        """The delivery log (every attempt), optionally for one prediction."""
        query = f"?prediction_id={prediction_id}" if prediction_id else ""
        entries: list[dict[str, Any]] = self._call("GET", f"/webhooks{query}")
        return entries

    def redeliver(
        self, prediction_id: str, event: str, webhook_id: str | None = None
    ) -> dict[str, Any]:
        """Replay a past delivery with its original id, timestamp and signature."""
        body: dict[str, str] = {"prediction_id": prediction_id, "event": event}
        if webhook_id is not None:
            body["webhook_id"] = webhook_id
        entry: dict[str, Any] = self._call("POST", "/webhooks/redeliver", body)
        return entry

    def wait_for_status(
        self, prediction_id: str, statuses: Iterable[str], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll until the prediction's status is one of ``statuses``."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            prediction = self.prediction(prediction_id)
            if prediction["status"] in wanted:
                return prediction
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prediction_id} is {prediction['status']}, not {wanted}")
            time.sleep(0.02)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()
