"""The control client for async tests: never blocks the test's event loop.

Make one per loop (``AsyncControlClient(emulator.base_url)``) and ``await
client.aclose()`` at the end, or use it as ``async with``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Unpack

import httpx

from replicate_emulator.control import ControlError, FaultKnobs
from replicate_emulator.tls import client_tls_context


class AsyncControlClient:
    """Asynchronous client of ``{base_url}/_emulator``; same methods as ControlClient."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/_emulator",
            timeout=timeout,
            verify=client_tls_context(),
        )

    async def _call(self, method: str, path: str, body: object = None) -> Any:
        response = await self._http.request(method, path, json=body)
        if response.is_error:
            raise ControlError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    async def set_faults(self, **knobs: Unpack[FaultKnobs]) -> dict[str, Any]:
        """Change the given knobs; returns every knob's value."""
        faults: dict[str, Any] = await self._call("POST", "/faults", dict(knobs))
        return faults

    async def faults(self) -> dict[str, Any]:
        """Every knob's current value."""
        faults: dict[str, Any] = await self._call("GET", "/faults")
        return faults

    async def reset(self) -> None:
        """Clear knobs, predictions, files and the webhook log."""
        await self._call("POST", "/reset")

    async def predictions(self) -> list[dict[str, Any]]:
        """Every prediction, oldest first, in the API's JSON shape."""
        predictions: list[dict[str, Any]] = await self._call("GET", "/predictions")
        return predictions

    async def prediction(self, prediction_id: str) -> dict[str, Any]:
        """One prediction in the API's JSON shape."""
        prediction: dict[str, Any] = await self._call("GET", f"/predictions/{prediction_id}")
        return prediction

    async def advance(self, prediction_id: str, status: str) -> dict[str, Any]:
        """Move a prediction to processing/succeeded/failed/canceled/aborted now."""
        prediction: dict[str, Any] = await self._call(
            "POST", f"/predictions/{prediction_id}/advance", {"status": status}
        )
        return prediction

    async def webhooks(self, prediction_id: str | None = None) -> list[dict[str, Any]]:
        """The delivery log (every attempt), optionally for one prediction."""
        query = f"?prediction_id={prediction_id}" if prediction_id else ""
        entries: list[dict[str, Any]] = await self._call("GET", f"/webhooks{query}")
        return entries

    async def redeliver(
        self, prediction_id: str, event: str, webhook_id: str | None = None
    ) -> dict[str, Any]:
        """Replay a past delivery with its original id, timestamp and signature."""
        body: dict[str, str] = {"prediction_id": prediction_id, "event": event}
        if webhook_id is not None:
            body["webhook_id"] = webhook_id
        entry: dict[str, Any] = await self._call("POST", "/webhooks/redeliver", body)
        return entry

    async def wait_for_status(
        self, prediction_id: str, statuses: Iterable[str], max_wait: float = 10.0
    ) -> dict[str, Any]:
        """Poll until the prediction's status is one of ``statuses`` (TimeoutError after)."""
        wanted = set(statuses)
        async with asyncio.timeout(max_wait):
            while True:
                prediction = await self.prediction(prediction_id)
                if prediction["status"] in wanted:
                    return prediction
                await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
