"""The sweeper's loops: time-outs and storage removals keep their pace whatever the
recovery of jobs does.

A pass over the jobs may last as long as every quiet job's output download with all
its retries (20 s each, 50 jobs a pass); a DELETE's files must still go within 60 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from generation.domain import sweep

Step = Callable[[Any], Awaitable[Any]]


async def _sweep_until(
    monkeypatch: pytest.MonkeyPatch,
    jobs_step: Step,
    files_step: Step,
    done: Callable[[], bool],
    timeouts_step: Step | None = None,
) -> None:
    """Run a Sweeper (10 ms interval) over these steps until ``done``, then stop it."""
    monkeypatch.setattr(sweep, "sweep_jobs_once", jobs_step)
    monkeypatch.setattr(sweep, "sweep_files_once", files_step)
    monkeypatch.setattr(sweep, "sweep_timeouts_once", timeouts_step or files_step)
    ctx = SimpleNamespace(config=SimpleNamespace(timings=SimpleNamespace(sweep_interval_ms=10)))
    sweeper = sweep.Sweeper(ctx)  # type: ignore[arg-type]
    sweeper.start()
    try:
        async with asyncio.timeout(5):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        await sweeper.stop()


async def test_time_outs_and_removals_go_on_while_a_pass_over_the_jobs_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs_passes: list[Any] = []
    removal_passes: list[Any] = []
    timeout_passes: list[Any] = []
    never = asyncio.Event()

    async def hanging_jobs_pass(ctx: Any) -> dict[str, int]:
        jobs_passes.append(ctx)
        await never.wait()  # polls whose outputs never download
        return {}

    def counted(passes: list[Any]) -> Step:
        async def step(ctx: Any) -> int:
            passes.append(ctx)
            return 0

        return step

    await _sweep_until(
        monkeypatch,
        hanging_jobs_pass,
        counted(removal_passes),
        lambda: len(removal_passes) >= 5 and len(timeout_passes) >= 5,
        timeouts_step=counted(timeout_passes),
    )
    assert len(jobs_passes) == 1  # still in its first pass


async def test_a_failing_step_does_not_stop_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    async def failing(ctx: Any) -> int:
        calls.append(ctx)
        raise RuntimeError("a bug in one pass")

    async def quiet(ctx: Any) -> dict[str, int]:
        return {}

    await _sweep_until(monkeypatch, quiet, failing, lambda: len(calls) >= 3)
