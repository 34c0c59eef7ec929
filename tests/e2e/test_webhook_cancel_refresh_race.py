"""Duplicate webhook deliveries racing a user's cancel and GET refreshes (stale polls)
and a sweep pass, all at once, while output downloads are slow (copies overlap).

Passing coverage (no defect found): each job ends succeeded (render stored, charged
once, never refunded) or canceled (refunded exactly once, no render), the audit is
clean, no job is left in flight.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from generation.domain.sweep import sweep_jobs_once
from tests.e2e.harness import Stack, User

pytestmark = pytest.mark.timeout(120)


async def _race_one(
    stack: Stack, user: User, prediction_id: str, job_id: str, delay: float
) -> None:
    async def cancel() -> None:
        await asyncio.sleep(delay)
        await user.cancel(job_id)

    async def refreshes() -> None:
        for _ in range(6):
            await user.get(job_id)
            await asyncio.sleep(0.03)

    async def redeliveries() -> None:
        await stack.control("wait_for_status", prediction_id, ["succeeded"], 10.0)
        for _ in range(3):
            try:
                await stack.control("redeliver", prediction_id, "completed")
            except Exception:  # not yet in the emulator's log: tried again
                await asyncio.sleep(0.05)

    async def sweep() -> None:
        await asyncio.sleep(delay / 2)
        await sweep_jobs_once(stack.ctx)

    await stack.control("advance", prediction_id, "succeeded")
    await asyncio.gather(cancel(), refreshes(), redeliveries(), sweep())


async def test_duplicate_webhooks_race_cancel_refresh_and_sweep(
    stack: Stack, http: httpx.AsyncClient, reset_emulator: None
) -> None:
    await stack.control("set_faults", hold=True, duplicate_webhooks=2, output_delay_ms=150)
    users = [User(stack, http) for _ in range(4)]
    jobs = []
    for user in users:
        response = await user.submit("imagine", prompt="A loft with a spiral staircase")
        assert response.status_code == 202, response.text
        jobs.append(response.json())
    for job in jobs:
        await stack.control("wait_for_status", job["predictionId"], ["processing"])
    # Make GETs stale so each one polls the provider.
    stack.clock.advance(timedelta(seconds=30))
    await asyncio.gather(
        *(
            _race_one(stack, user, job["predictionId"], job["id"], 0.02 * i)
            for i, (user, job) in enumerate(zip(users, jobs, strict=True))
        )
    )
    await stack.control("set_faults", hold=False)
    for user, job in zip(users, jobs, strict=True):
        body = await user.wait_for(job["id"], {"succeeded", "canceled", "failed"}, timeout=30)
        used = (await user.usage())["used"]
        if body["status"] == "succeeded":
            assert used == 1, body
            assert len(body["variants"]) == 1
            got = await http.get(body["variants"][0]["url"])
            assert got.status_code == 200
        else:
            assert used == 0, body
            assert body["variants"] == []
    stack.clock.advance(timedelta(seconds=30))
    await sweep_jobs_once(stack.ctx)
    findings = [(d.kind, d.job_id, d.detail) for d in await stack.audit()]
    assert findings == []
