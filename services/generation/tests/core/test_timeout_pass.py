"""A time-out pass ends every overdue job at once, whatever the services it then calls
are doing: the refunds and provider cancels that follow the ends run afterwards, several
at once. (It ended one job, then waited out that job's cancel, up to the provider's
4 x 10 s of retries, before the next: during a provider outage, the very time many jobs
go overdue, the last of a batch held its owner's one slot for many minutes.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from typing import Any

from sqlalchemy import text

from generation.domain import sweep
from generation.domain.provider import Prediction, ProviderUnavailable
from services.generation.tests.core.stack import Core

# What one cancel costs while the provider does not answer (shortened here).
HANGING_SECONDS = 2.0


class HangingCancels:
    def __init__(self, real: Any, seconds: float = HANGING_SECONDS) -> None:
        self._real = real
        self.seconds = seconds
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def cancel_prediction(self, prediction_id: str) -> Prediction:
        self.asked.append(prediction_id)
        await asyncio.sleep(self.seconds)  # every attempt timed out
        raise ProviderUnavailable("cancel timed out")


async def _overdue_job(core: Core) -> tuple[str, str]:
    job = (await core.submit(uuid.uuid4())).job
    await core.apply_webhook(job.prediction_id, "processing")
    await _make_overdue(core, job.id)
    return job.id, job.prediction_id


async def _make_overdue(core: Core, job_id: str) -> None:
    async with core.app.context.sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE generation_jobs SET created_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": uuid.UUID(job_id)},
        )


async def _states(core: Core, job_ids: list[str]) -> list[tuple[str, str]]:
    async with core.app.context.sessions() as session:
        rows = await session.execute(
            text("SELECT status, refund_state FROM generation_jobs WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(job_id) for job_id in job_ids]},
        )
        return [(row.status, row.refund_state) for row in rows]


async def test_overdue_jobs_end_at_once_while_the_provider_hangs(core: Core) -> None:
    overdue = [await _overdue_job(core) for _ in range(3)]
    provider = HangingCancels(core.app.context.provider)
    ctx = dataclasses.replace(core.app.context, provider=provider)
    job_ids = [job_id for job_id, _ in overdue]

    started = time.monotonic()
    pass_ = asyncio.create_task(sweep.sweep_timeouts_once(ctx))
    await asyncio.sleep(HANGING_SECONDS / 2)  # far more than ending three rows takes
    assert [status for status, _ in await _states(core, job_ids)] == ["failed"] * 3
    ended = await pass_

    assert ended >= 3
    # The three cancels waited side by side, not one after another.
    assert time.monotonic() - started < 2 * HANGING_SECONDS
    assert {prediction for _, prediction in overdue} <= set(provider.asked)
    assert {refund for _, refund in await _states(core, job_ids)} == {"done"}


async def test_a_job_overdue_during_another_jobs_hanging_cancel_is_ended_in_time(
    core: Core,
) -> None:
    """The follow-ups get one sweep interval: the loop's next pass, and a job that went
    overdue meanwhile, do not wait for a cancel the provider does not answer."""
    base = core.app.context
    timings = base.config.timings.model_copy(update={"sweep_interval_ms": 200})
    ctx = dataclasses.replace(
        base,
        provider=HangingCancels(base.provider, seconds=4.0),
        config=base.config.model_copy(update={"timings": timings}),
    )
    first = (await core.submit(uuid.uuid4())).job
    second = (await core.submit(uuid.uuid4())).job
    for job in (first, second):
        await core.apply_webhook(job.prediction_id, "processing")
    await _make_overdue(core, first.id)
    loop = asyncio.create_task(sweep.Sweeper(ctx)._every_interval(sweep.sweep_timeouts_once))
    try:
        for _ in range(50):
            if await _states(core, [first.id]) == [("failed", "done")]:
                break
            await asyncio.sleep(0.05)
        assert await _states(core, [first.id]) == [("failed", "done")]
        await _make_overdue(core, second.id)  # while the first's cancel hangs
        await asyncio.sleep(1.5)
        assert await _states(core, [second.id]) == [("failed", "done")]
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_a_job_left_without_its_run_is_ended_after_the_configured_grace(core: Core) -> None:
    """A job whose process died between its insert and the provider's answer is failed
    INTERRUPTED once ``timings.unsubmitted_grace_ms`` has passed, not before."""
    base = core.app.context
    timings = base.config.timings.model_copy(update={"unsubmitted_grace_ms": 100_000})
    ctx = dataclasses.replace(base, config=base.config.model_copy(update={"timings": timings}))
    young = (await core.submit(uuid.uuid4())).job
    old = (await core.submit(uuid.uuid4())).job
    for job, age_seconds in ((young, 90), (old, 110)):
        async with core.app.context.sessions() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE generation_jobs SET prediction_id = NULL, status = 'starting',"
                    " created_at = now() - make_interval(secs => :age) WHERE id = :id"
                ),
                {"id": uuid.UUID(job.id), "age": age_seconds},
            )
    await sweep.sweep_timeouts_once(ctx)
    assert [status for status, _ in await _states(core, [young.id])] == ["starting"]
    async with core.app.context.sessions() as session:
        ended = await session.execute(
            text("SELECT status, error_code FROM generation_jobs WHERE id = :id"),
            {"id": uuid.UUID(old.id)},
        )
        assert tuple(ended.one()) == ("failed", "INTERRUPTED")
