"""A debit whose answer never came back, for a job that then ends without output.

The usage service may have recorded the debit (the call timed out or was cut off after
it committed) or not (it never arrived). Either way the job was not recorded as
charged, so its end asked for no refund. The sweep settles it: a credit gives back
whatever was debited, and the job records what the credit found, so the books balance
and the user has their generation back.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from generation.domain.settlement import charge
from generation.domain.states import ChargeState, RefundState
from generation.domain.sweep import sweep_once
from generation.persistence.models import GenerationJob
from kit.db import session_scope
from kit.errors import UpstreamError
from tests.e2e.harness import Stack, User


async def _states(stack: Stack, job_id: str) -> tuple[str, str, str]:
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
    assert job is not None
    return job.status, job.charge_state, job.refund_state


async def _submit_with_the_debit_answer_lost(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch, *, debit_lands: bool
) -> str:
    """Submit while the debit call fails after (or instead of) reaching the usage service."""
    usage = stack.ctx.usage
    real_debit = usage.debit

    async def debit_without_answer(owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        if debit_lands:
            await real_debit(owner_id, job_id)
        raise UpstreamError("injected: the debit's answer was lost")

    monkeypatch.setattr(usage, "debit", debit_without_answer)
    response = await user.submit("imagine", prompt="A reading corner under the stairs")
    monkeypatch.undo()
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def _settle(stack: Stack) -> int:
    stack.clock.advance(timedelta(seconds=30))
    counts = await sweep_once(stack.ctx)
    return int(counts["settled"])


async def _books_of(stack: Stack, job_id: str) -> list[str]:
    return [d.kind for d in await stack.audit() if d.job_id == job_id]


async def test_a_landed_debit_of_a_failed_job_is_given_back_by_the_sweep(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.control("set_faults", fail_next=1)
    job_id = await _submit_with_the_debit_answer_lost(stack, user, monkeypatch, debit_lands=True)
    assert (await user.wait_for(job_id, {"failed", "succeeded"}))["status"] == "failed"
    # The debit is in the ledger, and nothing on the job says so.
    assert (await user.usage())["used"] == 1
    assert await _states(stack, job_id) == ("failed", ChargeState.NONE, RefundState.NONE)

    assert await _settle(stack) >= 1
    assert (await user.usage())["used"] == 0
    assert await _states(stack, job_id) == ("failed", ChargeState.CHARGED, RefundState.DONE)
    assert await _books_of(stack, job_id) == []
    assert await _settle(stack) == 0  # settled once: never asked again


async def _waived(stack: Stack, user: User) -> str:
    """A job whose debit never arrived, canceled, then settled by the sweep: waived."""
    await stack.control("set_faults", hold=True)
    with pytest.MonkeyPatch.context() as monkeypatch:
        job_id = await _submit_with_the_debit_answer_lost(
            stack, user, monkeypatch, debit_lands=False
        )
    assert (await user.cancel(job_id)).status_code == 200
    assert (await user.usage())["used"] == 0
    assert await _settle(stack) >= 1
    assert await _states(stack, job_id) == ("canceled", ChargeState.WAIVED, RefundState.NONE)
    return job_id


async def test_a_canceled_job_whose_debit_never_arrived_is_waived(stack: Stack, user: User) -> None:
    job_id = await _waived(stack, user)
    assert (await user.usage())["used"] == 0  # nothing was debited, nothing is credited
    assert await _books_of(stack, job_id) == []
    assert await _settle(stack) == 0


async def test_a_debit_arriving_after_the_job_was_waived_is_never_recorded(
    stack: Stack, user: User
) -> None:
    """The sweep's credit found no debit and the job was waived; the unanswered call's
    retry arrives after all. The usage service writes nothing for it (the credit
    settled the job without a charge), and the job stays waived."""
    job_id = await _waived(stack, user)

    async with session_scope(stack.ctx.sessions) as session:
        row = await session.get(GenerationJob, uuid.UUID(job_id))
    assert row is not None
    assert await charge(stack.ctx, row) is None
    assert await _states(stack, job_id) == ("canceled", ChargeState.WAIVED, RefundState.NONE)
    assert (await user.usage())["used"] == 0
    assert await _books_of(stack, job_id) == []


async def test_a_late_debit_whose_answer_is_lost_too_leaves_no_charge(
    stack: Stack, user: User
) -> None:
    """The same late debit, its answer lost as well (cut off after it was sent): nothing
    would give a recorded debit back (the job is waived for good), so none is recorded."""
    job_id = await _waived(stack, user)

    assert await stack.ctx.usage.debit(user.id, uuid.UUID(job_id)) is False

    assert (await user.usage())["used"] == 0
    assert await _books_of(stack, job_id) == []
    assert await _settle(stack) == 0


async def test_a_succeeded_jobs_lost_debit_answer_does_not_take_the_last_generation(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The debit was recorded, its answer lost, and the job succeeded: until the sweep
    settles it, generation counts the job as a debit still to come, while the usage
    service already counts it. Counted by both, the owner's last generation was refused
    (402 while GET /usage showed it left). Admission now names the job to the usage
    service, which counts it once."""
    await stack.set_plan(user.id, "price_test_two")
    job_id = await _submit_with_the_debit_answer_lost(stack, user, monkeypatch, debit_lands=True)
    assert (await user.wait_for(job_id, {"failed", "succeeded"}))["status"] == "succeeded"
    assert await _states(stack, job_id) == ("succeeded", ChargeState.NONE, RefundState.NONE)
    assert (await user.usage())["remaining"] == 1

    last = await user.submit("imagine", prompt="A reading corner under the stairs")
    assert last.status_code == 202, last.text
    assert (await user.wait_for(last.json()["id"], {"succeeded"}))["status"] == "succeeded"
    assert (await user.usage())["remaining"] == 0
    refused = await user.submit("imagine", prompt="A reading corner under the stairs")
    assert refused.status_code == 402, refused.text

    assert await _settle(stack) >= 1  # the lost answer's job: charged, counted once
    assert await _states(stack, job_id) == ("succeeded", ChargeState.CHARGED, RefundState.NONE)
    assert (await user.usage())["used"] == 2
    assert await _books_of(stack, job_id) == []


async def _submit_with_the_debit_unreachable(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch, prompt: str
) -> str:
    """Submit while the debit never reaches the usage service: the sweep charges it."""

    async def unreachable(owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        raise UpstreamError("injected: the usage service is unreachable for the debit")

    monkeypatch.setattr(stack.ctx.usage, "debit", unreachable)
    response = await user.submit("imagine", prompt=prompt)
    monkeypatch.undo()
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def _renders_of(stack: Stack, user: User) -> int:
    async with session_scope(stack.ctx.sessions) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(GenerationJob)
            .where(GenerationJob.owner_id == user.id, GenerationJob.status == "succeeded")
        )
    return int(count or 0)


async def test_a_late_debit_refused_for_the_plan_fails_the_job_still_in_flight(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep charges a job whose submission could not reach the usage service, and
    the plan shrank meanwhile: the job must not go on to a render past the plan (it used
    to be waived, as if its run were over, and rendered free). It ends failed and its
    run is stopped, as a submission's refused debit does."""
    await stack.set_plan(user.id, "price_test_two")
    first = await user.submit("imagine", prompt="A sunny kitchen")
    assert first.status_code == 202, first.text
    await user.wait_for(first.json()["id"], {"succeeded"})
    await stack.control("set_faults", hold=True)
    job_id = await _submit_with_the_debit_unreachable(stack, user, monkeypatch, "A quiet study")
    await user.wait_for(job_id, {"processing"})
    await stack.set_plan(user.id, "price_test_one")

    await _settle(stack)

    job = await user.get(job_id)
    assert job.json()["status"] == "failed"
    assert job.json()["error"]["code"] == "LIMIT_EXCEEDED"
    prediction = await stack.ctx.provider.get_prediction(job.json()["predictionId"])
    assert prediction.status.value == "canceled"
    await _settle(stack)  # ended without output, its debit refused: never to be charged
    assert await _states(stack, job_id) == ("failed", ChargeState.WAIVED, RefundState.NONE)
    assert (await user.usage())["used"] == 1
    assert await _renders_of(stack, user) == 1
    assert await _books_of(stack, job_id) == []


async def test_a_late_debit_refused_while_a_give_back_is_due_waits_for_it(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plan one. Z's debit went unanswered, landed after all, and Z failed: its
    generation is still to be given back when A's late debit is asked (Z's credit
    cannot reach the usage service in that pass). A's refusal is Z's debit still
    counting: A must neither render free (it used to be waived while in flight) nor
    fail; it is charged once Z's generation is back."""
    await stack.set_plan(user.id, "price_test_one")
    await stack.control("set_faults", fail_next=1)
    z_id = await _submit_with_the_debit_unreachable(stack, user, monkeypatch, "A failing attic")
    assert (await user.wait_for(z_id, {"failed", "succeeded"}))["status"] == "failed"
    await stack.control("set_faults", hold=True)
    a_id = await _submit_with_the_debit_unreachable(stack, user, monkeypatch, "A quiet study")
    # Its run started (a change later than the clock's moves would keep it from settling).
    await user.wait_for(a_id, {"processing"})
    assert await stack.ctx.usage.debit(user.id, uuid.UUID(z_id)) is True  # Z's, landing late
    assert (await user.usage())["used"] == 1

    async def credit_unreachable(owner_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> bool:
        raise UpstreamError("injected: the usage service is unreachable for the credit")

    with monkeypatch.context() as patched:
        patched.setattr(stack.ctx.usage, "credit", credit_unreachable)
        await _settle(stack)
    assert await _states(stack, a_id) == ("processing", ChargeState.NONE, RefundState.NONE)

    await _settle(stack)  # Z's generation back first, then A's debit

    assert await _states(stack, z_id) == ("failed", ChargeState.CHARGED, RefundState.DONE)
    assert (await _states(stack, a_id))[1] == ChargeState.CHARGED
    await stack.control("set_faults", hold=False)
    assert (await user.wait_for(a_id, {"succeeded", "failed"}))["status"] == "succeeded"
    assert (await user.submit("imagine", prompt="A bright hallway")).status_code == 402
    assert (await user.usage())["used"] == 1
    assert await _renders_of(stack, user) == 1
    assert await _books_of(stack, a_id) == await _books_of(stack, z_id) == []
