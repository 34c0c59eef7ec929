"""Cancel, delete, webhooks that repeat, arrive out of order, are forged or get lost,
and provider trouble: the state machine and the ledger stay right."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from generation.domain import commands
from generation.domain.context import GenerationContext
from generation.domain.jobs import JobView
from generation.domain.queries import load_view
from generation.domain.records import InsertOutcome, Job, NewJob
from generation.domain.refresh import poll_and_apply
from generation.domain.sweep import sweep_once
from generation.persistence.models import GenerationJob, Render, RenderVariant
from generation.wiring import WiredContext
from kit.db import session_scope
from tests.e2e.harness import Stack, User, job_count, jpeg_bytes, objects_under


async def _job(stack: Stack, job_id: str) -> GenerationJob:
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
    assert job is not None
    return job


async def _render_rows(stack: Stack, job_id: str) -> tuple[int, int]:
    async with session_scope(stack.ctx.sessions) as session:
        renders = await session.scalar(
            select(func.count()).select_from(Render).where(Render.job_id == uuid.UUID(job_id))
        )
        variants = await session.scalar(
            select(func.count())
            .select_from(RenderVariant)
            .join(Render, Render.id == RenderVariant.render_id)
            .where(Render.job_id == uuid.UUID(job_id))
        )
    return int(renders or 0), int(variants or 0)


async def _usage_settles(user: User, used: int, timeout: float = 5.0) -> None:
    """The refund follows the terminal status within moments; wait for it."""
    deadline = time.monotonic() + timeout
    while (await user.usage())["used"] != used:
        assert time.monotonic() < deadline, await user.usage()
        await asyncio.sleep(0.05)


async def _held_job(stack: Stack, user: User) -> dict[str, object]:
    await stack.control("set_faults", hold=True)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    body: dict[str, object] = response.json()
    return body


async def test_cancel_refunds_and_a_finished_job_cannot_be_canceled(
    stack: Stack, user: User
) -> None:
    job = await _held_job(stack, user)
    assert (await user.usage())["used"] == 1
    canceled = await user.cancel(str(job["id"]))
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["error"]["code"] == "CANCELED"
    prediction = await stack.control("prediction", job["predictionId"])
    assert prediction["status"] == "canceled"
    assert (await user.usage())["used"] == 0
    again = await user.cancel(str(job["id"]))
    assert again.status_code == 200
    assert (await user.usage())["used"] == 0

    await stack.control("set_faults", hold=False)
    done = await user.submit("imagine", prompt="A sunroom with plants")
    await user.wait_for(done.json()["id"], {"succeeded"})
    refused = await user.cancel(done.json()["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "JOB_NOT_CANCELLABLE"


async def test_a_cancel_whose_webhook_ended_the_job_first_answers_after_the_refund(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's ``canceled`` webhook ends the job while the cancel is still at the
    provider, and the webhook's refund is slow: the cancel's answer comes after the
    generation is back all the same (GET /usage right after it showed it used)."""
    job_id = str((await _held_job(stack, user))["id"])
    # The webhook reaches the last generation instance; the edge's cancel the first.
    webhooks = stack.generations[-1].context
    real_cancel, real_credit = stack.ctx.provider.cancel_prediction, webhooks.usage.credit
    credits: list[asyncio.Task[bool]] = []

    async def cancel_then_let_the_webhook_end_it(prediction_id: str) -> object:
        prediction = await real_cancel(prediction_id)
        async with asyncio.timeout(5):
            while (await _job(stack, job_id)).status != "canceled":
                await asyncio.sleep(0.01)
        return prediction

    async def slow_first(owner_id: uuid.UUID, credited: uuid.UUID, reason: str) -> bool:
        first = not credits

        async def call() -> bool:
            if first:
                await asyncio.sleep(0.5)
            return await real_credit(owner_id, credited, reason)

        credits.append(asyncio.ensure_future(call()))
        return await asyncio.shield(credits[-1])

    monkeypatch.setattr(stack.ctx.provider, "cancel_prediction", cancel_then_let_the_webhook_end_it)
    monkeypatch.setattr(webhooks.usage, "credit", slow_first)

    canceled = await user.cancel(job_id)

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert (await user.usage())["used"] == 0
    await asyncio.gather(*credits)  # the webhook's, a replay at the usage service
    assert (await _job(stack, job_id)).refund_state == "done"
    assert [d for d in await stack.audit() if d.job_id == job_id] == []


async def test_a_cancel_that_finds_the_run_succeeded_never_loses_its_result(
    stack: Stack, user: User
) -> None:
    """The run succeeded (its webhook lost) before the cancel reached it, and its output
    cannot be stored right now: the job is not canceled and refunded over a result the
    provider produced; it stays in flight until the result is stored."""
    await stack.control("set_faults", drop_webhooks="all")
    submitted = await user.submit("imagine", prompt="A library with a rolling ladder")
    job_id, prediction_id = submitted.json()["id"], submitted.json()["predictionId"]
    await stack.control("wait_for_status", prediction_id, ["succeeded"])
    await stack.control("set_faults", output_errors=[503] * 50)

    refused = await user.cancel(job_id)

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "JOB_NOT_CANCELLABLE"
    assert (await user.get(job_id)).json()["status"] in {"starting", "processing"}
    assert (await user.usage())["used"] == 1
    await stack.control("set_faults", output_errors=[])
    stack.clock.advance(timedelta(seconds=6))  # stale: the next GET asks the provider
    done = await user.wait_for(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded"
    assert len(done["variants"]) == 1
    assert (await user.usage())["used"] == 1


async def test_a_cancel_that_read_the_job_before_its_prediction_was_attached_stops_the_run(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel reads the job while the submission is still asking the provider, and
    the submission attaches the prediction before the cancel ends the job."""
    job = await _held_job(stack, user)
    reads = 0

    async def read_before_the_attach(
        ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID
    ) -> JobView:
        nonlocal reads
        reads += 1
        view = await load_view(ctx, owner_id, job_id)
        return dataclasses.replace(view, prediction_id=None) if reads == 1 else view

    monkeypatch.setattr(commands, "load_view", read_before_the_attach)
    view = await commands.cancel_generation(stack.ctx, user.id, uuid.UUID(str(job["id"])))
    assert view.status == "canceled"
    prediction = await stack.control("prediction", job["predictionId"])
    assert prediction["status"] == "canceled"


async def test_bad_patch_bodies_are_400(user: User) -> None:
    response = await user.client.patch(
        f"{user.stack.api}/generations/{uuid.uuid4()}",
        json={"action": "explode"},
        headers=user.headers,
    )
    assert response.status_code == 400


async def test_delete_soft_deletes_finished_jobs_only(stack: Stack, user: User) -> None:
    job = await _held_job(stack, user)
    running = await user.delete(str(job["id"]))
    assert running.status_code == 409
    assert running.json()["error"]["code"] == "JOB_NOT_FINISHED"
    await stack.control("advance", job["predictionId"], "succeeded")
    done = await user.wait_for(str(job["id"]), {"succeeded"})
    assert len(done["variants"]) == 1
    deleted = await user.delete(str(job["id"]))
    assert deleted.status_code == 200
    after = (await user.get(str(job["id"]))).json()
    assert after["variants"] == []
    async with session_scope(stack.ctx.sessions) as session:
        render = await session.scalar(
            select(Render).where(Render.job_id == uuid.UUID(str(job["id"])))
        )
    assert render is not None
    assert render.deleted_at is not None


async def test_duplicate_and_out_of_order_webhooks_change_nothing(stack: Stack, user: User) -> None:
    await stack.control("set_faults", duplicate_webhooks=2, reorder_webhooks=True)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="coastal_au")
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"succeeded"})
    await asyncio.sleep(1.0)  # let every duplicate and late event arrive
    body = (await user.get(job_id)).json()
    assert body["status"] == "succeeded"
    assert await _render_rows(stack, job_id) == (1, 1)
    assert (await user.usage())["used"] == 1
    deliveries = await stack.control("webhooks", response.json()["predictionId"])
    # start, logs, logs and completed (one output value: no output event), each sent
    # three times.
    assert len(deliveries) >= 12
    assert {entry["event"] for entry in deliveries} == {"start", "logs", "completed"}


async def test_replayed_terminal_webhook_is_harmless(stack: Stack, user: User) -> None:
    response = await user.submit("imagine", prompt="A loft with exposed beams")
    job_id, prediction_id = response.json()["id"], response.json()["predictionId"]
    await user.wait_for(job_id, {"succeeded"})
    # A redelivery returns once the gateway answered, and the gateway answers only
    # after generation applied (or ignored) the event: nothing is left to wait for.
    replays = [
        await stack.control("redeliver", prediction_id, "completed"),
        await stack.control("redeliver", prediction_id, "start"),
    ]
    assert [entry["status_code"] for entry in replays] == [200, 200]
    assert (await user.get(job_id)).json()["status"] == "succeeded"
    assert await _render_rows(stack, job_id) == (1, 1)


async def test_forged_webhook_is_refused_and_changes_nothing(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await _held_job(stack, user)
    forged = {"id": job["predictionId"], "status": "failed", "error": "forged"}
    response = await http.post(
        f"{stack.gateway.base_url}/api/v1/webhooks/replicate",
        content=json.dumps(forged),
        headers={
            "content-type": "application/json",
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        },
    )
    assert response.status_code == 401
    assert (await user.get(str(job["id"]))).json()["status"] in {"starting", "processing"}
    assert (await user.usage())["used"] == 1
    await stack.control("advance", job["predictionId"], "succeeded")
    await user.wait_for(str(job["id"]), {"succeeded"})


async def test_lost_webhook_is_recovered_by_a_get(stack: Stack, user: User) -> None:
    await stack.control("set_faults", drop_webhooks="all")
    response = await user.submit("imagine", prompt="A terrace with a pergola")
    job_id = response.json()["id"]
    await stack.control("wait_for_status", response.json()["predictionId"], ["succeeded"])
    assert (await user.get(job_id)).json()["status"] == "starting"  # not stale yet
    stack.clock.advance(timedelta(seconds=6))
    body = (await user.get(job_id)).json()
    assert body["status"] == "succeeded"
    assert len(body["variants"]) == 1


async def test_lost_webhook_is_recovered_by_the_sweep_alone(stack: Stack, user: User) -> None:
    await stack.control("set_faults", drop_webhooks="all")
    response = await user.submit("imagine", prompt="A mudroom with hooks")
    job_id = response.json()["id"]
    await stack.control("wait_for_status", response.json()["predictionId"], ["succeeded"])
    stack.clock.advance(timedelta(seconds=30))
    counts = await sweep_once(stack.ctx)
    assert counts["recovered"] >= 1
    job = await _job(stack, job_id)
    assert job.status == "succeeded"
    assert await _render_rows(stack, job_id) == (1, 1)


async def test_a_job_that_breaks_a_sweep_step_does_not_stop_the_pass_for_the_others(
    stack: Stack, user: User, other_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.control("set_faults", drop_webhooks="all")
    broken = (await user.submit("imagine", prompt="A sunroom with wicker chairs")).json()
    fine = (await other_user.submit("imagine", prompt="A boot room with a bench")).json()
    for job in (broken, fine):
        await stack.control("wait_for_status", job["predictionId"], ["succeeded"])

    async def fails_for_one_job(
        ctx: WiredContext, job: Job, prediction_id: str, *, source: str
    ) -> bool:
        if str(job.id) == broken["id"]:
            raise RuntimeError("injected: a fault no step expects")
        return await poll_and_apply(ctx, job, prediction_id, source=source)

    monkeypatch.setattr("generation.domain.sweep.poll_and_apply", fails_for_one_job)
    stack.clock.advance(timedelta(seconds=30))
    counts = await sweep_once(stack.ctx)
    assert counts["recovered"] >= 1
    assert (await _job(stack, fine["id"])).status == "succeeded"
    assert (await _job(stack, broken["id"])).status == "starting"
    monkeypatch.undo()
    stack.clock.advance(timedelta(seconds=30))
    await sweep_once(stack.ctx)  # the next pass tries it again
    assert (await _job(stack, broken["id"])).status == "succeeded"


async def test_provider_503s_then_success(stack: Stack, user: User) -> None:
    await stack.control("set_faults", create_errors=[503, 503, 429])
    response = await user.submit("imagine", prompt="A games room")
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})


async def test_provider_down_is_502_without_charge_or_held_slot(stack: Stack, user: User) -> None:
    await stack.control("set_faults", create_errors=[503] * 8)
    response = await user.submit("imagine", prompt="A library nook")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
    assert (await user.usage())["used"] == 0
    await stack.control("reset")
    retry = await user.submit("imagine", prompt="A library nook")
    assert retry.status_code == 202, retry.text
    await user.wait_for(retry.json()["id"], {"succeeded"})
    assert (await user.usage())["used"] == 1


async def test_provider_failure_gives_the_generation_back(stack: Stack, user: User) -> None:
    await stack.control("set_faults", fail_next=1)
    response = await user.submit("imagine", prompt="A wine cellar")
    body = await user.wait_for(response.json()["id"], {"failed", "succeeded"})
    assert body["status"] == "failed"
    assert body["error"]["code"] == "PROVIDER_FAILED"
    assert "Gemini" not in json.dumps(body)
    await _usage_settles(user, used=0)


async def test_overall_timeout_cancels_fails_and_refunds(stack: Stack, user: User) -> None:
    job = await _held_job(stack, user)
    stack.clock.advance(timedelta(minutes=11))
    counts = await sweep_once(stack.ctx)
    assert counts["timedOut"] >= 1
    body = (await user.get(str(job["id"]))).json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "TIMED_OUT"
    assert (await stack.control("prediction", job["predictionId"]))["status"] == "canceled"
    await _usage_settles(user, used=0)


async def test_a_recovery_that_cannot_download_never_delays_the_time_out(
    stack: Stack, user: User
) -> None:
    # The webhook was lost and the output does not download: polling the job would
    # hold the pass for as long as the download's retries (minutes with the default
    # timeouts). Past the overall timeout the pass ends the job without that attempt.
    await stack.control("set_faults", drop_webhooks="all", output_delay_ms=600_000)
    response = await user.submit("imagine", prompt="A loft with a reading net")
    job = response.json()
    await stack.control("wait_for_status", job["predictionId"], ["succeeded"])
    stack.clock.advance(timedelta(minutes=11))
    try:
        counts = await asyncio.wait_for(sweep_once(stack.ctx), timeout=15)
    finally:
        await stack.control("reset")
    assert (counts["timedOut"], counts["recovered"]) == (1, 0)
    body = (await user.get(str(job["id"]))).json()
    assert (body["status"], body["error"]["code"]) == ("failed", "TIMED_OUT")
    await _usage_settles(user, used=0)


async def test_the_providers_canceled_webhook_cannot_beat_the_time_out(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The provider answers the sweep's cancel with a "canceled" webhook, which may reach
    # generation before the sweep records the time-out: the job must still end
    # failed / TIMED_OUT (the user canceled nothing), refunded once.
    job = await _held_job(stack, user)
    prediction_id = str(job["predictionId"])
    cancel = stack.ctx.provider.cancel_prediction

    async def cancel_then_wait_for_its_webhook(asked: str) -> object:
        answer = await cancel(asked)
        for _ in range(200):
            deliveries = await stack.control("webhooks", prediction_id)
            if any(d["event"] == "completed" and d["status_code"] == 200 for d in deliveries):
                break
            await asyncio.sleep(0.025)
        return answer

    monkeypatch.setattr(stack.ctx.provider, "cancel_prediction", cancel_then_wait_for_its_webhook)
    stack.clock.advance(timedelta(minutes=11))
    counts = await sweep_once(stack.ctx)
    monkeypatch.undo()

    assert counts["timedOut"] == 1
    body = (await user.get(str(job["id"]))).json()
    assert (body["status"], body["error"]["code"]) == ("failed", "TIMED_OUT")
    assert (await stack.control("prediction", prediction_id))["status"] == "canceled"
    await _usage_settles(user, used=0)


async def test_database_failure_after_provider_accepted_abandons_the_run(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from generation.persistence.repositories import JobRepository

    async def broken_attach(*args: object, **kwargs: object) -> bool:
        raise OperationalError("UPDATE", {}, ConnectionResetError("server closed"))

    await stack.control("set_faults", hold=True)
    monkeypatch.setattr(JobRepository, "attach_prediction", broken_attach)
    response = await user.submit("imagine", prompt="A garden shed studio")
    monkeypatch.undo()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
    [prediction] = [
        p for p in await stack.control("predictions") if "garden shed" in p["input"]["prompt"]
    ]
    assert prediction["status"] == "canceled"
    assert (await user.usage())["used"] == 0
    retry = await user.submit("imagine", prompt="A garden shed studio, take two")
    assert retry.status_code == 202, retry.text  # the slot was freed at once
    await stack.control("advance", retry.json()["predictionId"], "succeeded")
    await user.wait_for(retry.json()["id"], {"succeeded"})


async def test_a_job_row_that_could_not_be_written_leaves_no_inputs(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from generation.persistence.repositories import JobRepository

    async def broken_insert(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, ConnectionResetError("server closed"))

    monkeypatch.setattr(JobRepository, "insert", broken_insert)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    monkeypatch.undo()
    assert response.status_code == 503
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []
    assert await job_count(stack, user.id) == 0


async def test_a_job_row_written_before_its_answer_was_lost_keeps_its_inputs(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from generation.persistence.repositories import JobRepository

    insert = JobRepository.insert

    async def answer_lost(self: JobRepository, job: NewJob) -> InsertOutcome:
        await insert(self, job)
        raise OperationalError("INSERT", {}, ConnectionResetError("server closed"))

    monkeypatch.setattr(JobRepository, "insert", answer_lost)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    monkeypatch.undo()
    assert response.status_code == 503
    assert await job_count(stack, user.id) == 1
    inputs = await objects_under(stack, "private", f"{user.id}/inputs/")
    assert len(inputs) == 1  # the written row names it
    # The row never reached the provider: the sweep ends it, and it keeps its input.
    stack.clock.advance(timedelta(minutes=11))
    assert (await sweep_once(stack.ctx))["timedOut"] >= 1
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == inputs
