"""A generation handler that dies (no cleanup code runs) at each step of a submission,
then the sweep (with the usage service down for a pass, then two sweeps at once)
must converge: job ended, debit/refund exactly once, audit clean.

A SIGKILL is emulated in-process: the step after the kill point is replaced by a
coroutine that cancels its own handler task, so none of the submission's unwinding
code runs (the row, the provider run, the debit are left exactly as a dead process
leaves them); the rest of the system (gateway, webhooks, sweep) stays up, as after a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from generation.domain import prediction_start, submission
from generation.domain.sweep import sweep_once
from generation.persistence.models import GenerationJob
from kit.db import session_scope
from kit.errors import UpstreamError
from tests.e2e.harness import Stack, User

pytestmark = pytest.mark.timeout(120)
TERMINAL = {"succeeded", "failed", "canceled"}


async def _rows(stack: Stack, owner: uuid.UUID) -> list[GenerationJob]:
    async with session_scope(stack.ctx.sessions) as session:
        return list(
            (
                await session.scalars(select(GenerationJob).where(GenerationJob.owner_id == owner))
            ).all()
        )


class _Kill:
    """Replace one step so that reaching it kills the handler (no cleanup runs)."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    async def die(self) -> Any:
        self.reached.set()
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(3600)


def _install(point: str, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> _Kill:
    kill = _Kill()
    if point == "after_insert":

        async def start_prediction(*args: Any, **kwargs: Any) -> Any:
            return await kill.die()

        monkeypatch.setattr(submission, "start_prediction", start_prediction)
    elif point == "after_create":

        async def attach_and_charge(*args: Any, **kwargs: Any) -> Any:
            return await kill.die()

        monkeypatch.setattr(prediction_start, "_attach_and_charge", attach_and_charge)
    elif point == "after_attach":

        async def charge(*args: Any, **kwargs: Any) -> Any:
            return await kill.die()

        monkeypatch.setattr(prediction_start, "charge", charge)
    elif point == "after_debit":
        real = stack.ctx.usage.debit

        async def debit(owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
            await real(owner_id, job_id)
            await kill.die()
            raise AssertionError("a killed handler goes no further")

        monkeypatch.setattr(stack.ctx.usage, "debit", debit)
    else:
        raise AssertionError(point)
    return kill


async def _converge(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage down for one pass, then passes of two sweeps at once."""

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise UpstreamError("injected: usage down")

    with monkeypatch.context() as patch:
        for name in ("debit", "credit"):
            patch.setattr(stack.ctx.usage, name, down)
        stack.clock.advance(timedelta(seconds=30))
        await sweep_once(stack.ctx)
    for _ in range(3):
        stack.clock.advance(timedelta(minutes=3))
        await asyncio.gather(sweep_once(stack.ctx), sweep_once(stack.ctx))
        await asyncio.sleep(0.2)


EXPECTED = {
    # point, run fails? -> (status, error, charge, refund, used)
    ("after_insert", False): ("failed", "INTERRUPTED", "none", "none", 0),
    ("after_create", False): ("succeeded", None, "charged", "none", 1),
    ("after_attach", False): ("succeeded", None, "charged", "none", 1),
    ("after_debit", False): ("succeeded", None, "charged", "none", 1),
    ("after_create", True): ("failed", "PROVIDER_FAILED", "waived", "none", 0),
    ("after_attach", True): ("failed", "PROVIDER_FAILED", "waived", "none", 0),
    ("after_debit", True): ("failed", "PROVIDER_FAILED", "charged", "done", 0),
}


@pytest.mark.parametrize(("point", "run_fails"), list(EXPECTED))
async def test_a_submission_killed_at_each_step_converges(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch, point: str, run_fails: bool
) -> None:
    if run_fails:
        await stack.control("set_faults", fail_next=1)
    with monkeypatch.context() as patch:
        kill = _install(point, stack, patch)
        pending = asyncio.ensure_future(user.submit("imagine", prompt="A sunroom full of plants"))
        await asyncio.wait_for(kill.reached.wait(), 10)
        await asyncio.sleep(0.2)
        pending.cancel()  # the process is gone: its client sees the connection drop
        with contextlib.suppress(BaseException):
            await pending
    if point != "after_insert":
        # The run finishes and its webhooks reach generation (as after a restart): the
        # job, attached or adopted from them, ends.
        async with asyncio.timeout(10):
            while (await _rows(stack, user.id))[0].status not in TERMINAL:
                await asyncio.sleep(0.05)
    await _converge(stack, monkeypatch)
    (row,) = await _rows(stack, user.id)
    status, error, charge, refund, used = EXPECTED[(point, run_fails)]
    assert (row.status, row.charge_state, row.refund_state) == (status, charge, refund), (
        row.status,
        row.error_code,
        row.charge_state,
        row.refund_state,
    )
    if error is not None:
        assert row.error_code == error
    assert (await user.usage())["used"] == used
    if row.prediction_id is not None:
        prediction = await stack.control("prediction", row.prediction_id)
        assert prediction["status"] in {"succeeded", "failed", "canceled"}, prediction
    findings = [(d.kind, d.job_id, d.detail) for d in await stack.audit()]
    assert findings == []
    # The slot is free: the next submission goes through and completes.
    again = await user.submit("imagine", prompt="A sunroom full of ferns")
    assert again.status_code == 202, again.text
    body = await user.wait_for(again.json()["id"], {"succeeded"})
    assert body["status"] == "succeeded"
