"""Each mode end to end: edge -> gRPC -> Postgres, S3, emulator -> webhook -> renders."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.harness import Stack, User, jpeg_bytes


async def _emulator_output(stack: Stack, http: httpx.AsyncClient, prediction_id: str) -> bytes:
    prediction = await stack.control("prediction", prediction_id)
    output = prediction["output"]
    url = output if isinstance(output, str) else output[0]
    response = await http.get(url)
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize(
    ("mode", "images", "fields"),
    [
        ("redesign", 1, {"style": "coastal_au", "roomType": "living_room"}),
        ("staging", 1, {"style": "japandi", "roomType": "bedroom", "prompt": "Add a reading nook"}),
        ("compose", 2, {"style": "hamptons_au", "roomType": "dining"}),
        ("imagine", 0, {"style": "minimal_au", "prompt": "A calm home office with a view"}),
    ],
)
async def test_mode_happy_path_stores_the_emulator_output(
    stack: Stack,
    user: User,
    http: httpx.AsyncClient,
    mode: str,
    images: int,
    fields: dict[str, str],
) -> None:
    pictures = [jpeg_bytes(color=(40 * i + 60, 90, 120)) for i in range(images)]
    response = await user.submit(mode, images=pictures or None, **fields)
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/api/v1/generations/{body['id']}"
    assert body["status"] in {"starting", "processing"}  # the start webhook may win the race
    assert body["predictionId"]
    assert body["settings"]["mode"] == mode

    done = await user.wait_for(body["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["completedAt"]
    [variant] = done["variants"]
    assert variant["idx"] == 0
    assert "/public/renders/" in variant["url"]
    stored = await http.get(variant["url"])
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/jpeg"
    assert stored.content == await _emulator_output(stack, http, body["predictionId"])

    usage = await user.usage()
    assert usage["used"] == 1


async def test_inputs_are_private_and_reach_the_model_only_signed(stack: Stack, user: User) -> None:
    response = await user.submit("redesign", images=[jpeg_bytes()], style="scandi_au")
    assert response.status_code == 202, response.text
    prediction = await stack.control("prediction", response.json()["predictionId"])
    [url] = prediction["input"]["image_input"]
    assert f"/private/{user.id}/inputs/" in url
    assert "X-Amz-Signature=" in url
    unsigned = url.split("?", 1)[0]
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(unsigned)).status_code == 403
        assert (await anonymous.get(url)).status_code == 200
    await user.wait_for(response.json()["id"], {"succeeded"})


async def test_the_composed_prompt_reaches_the_model(stack: Stack, user: User) -> None:
    response = await user.submit(
        "imagine", prompt="A sunny reading corner", style="coastal_au", roomType="living_room"
    )
    assert response.status_code == 202, response.text
    prediction = await stack.control("prediction", response.json()["predictionId"])
    prompt = prediction["input"]["prompt"]
    assert prompt.startswith("Generate a photoreal interior concept")
    assert "Australian homes" in prompt
    assert prompt.rstrip(".").endswith("A sunny reading corner")
    assert prediction["input"]["output_format"] == "jpg"
    await user.wait_for(response.json()["id"], {"succeeded"})


async def test_every_run_is_given_a_deadline_at_the_provider(stack: Stack, user: User) -> None:
    """Cancel-After: the provider stops a run we lost track of (a lost create answer
    without webhooks, a failed orphan cancel, no sweep running) on its own; later than
    the job's overall timeout plus two sweeps, so the sweep ends a job that is merely
    slow first, as TIMED_OUT."""
    response = await user.submit("imagine", prompt="A sunny reading corner")
    assert response.status_code == 202, response.text
    prediction = await stack.control("prediction", response.json()["predictionId"])
    await user.wait_for(response.json()["id"], {"succeeded"})

    created = datetime.fromisoformat(prediction["created_at"])
    allowed = datetime.fromisoformat(prediction["deadline"]) - created
    timings = stack.ctx.config.timings
    sweeps_late = timedelta(milliseconds=timings.overall_timeout_ms + 2 * timings.sweep_interval_ms)
    assert sweeps_late < allowed <= sweeps_late + timedelta(minutes=2)


async def test_the_inputs_links_live_as_long_as_the_run_may_wait_to_start(
    stack: Stack, user: User
) -> None:
    """A queued run fetches its inputs when it starts, up to its deadline: links that
    expired after the user's 5 minutes would fail a run that started later."""
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    prediction = await stack.control("prediction", response.json()["predictionId"])
    await user.wait_for(response.json()["id"], {"succeeded"})

    [url] = prediction["input"]["image_input"]
    expires = timedelta(seconds=int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]))
    allowed = datetime.fromisoformat(prediction["deadline"]) - datetime.fromisoformat(
        prediction["created_at"]
    )
    assert expires >= allowed - timedelta(seconds=1)
    assert expires > timedelta(seconds=stack.ctx.config.uploads.signed_url_ttl_seconds)


async def test_unknown_and_foreign_jobs_are_the_same_404(user: User, other_user: User) -> None:
    response = await user.submit("imagine", prompt="A bright kitchen with timber benches")
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"succeeded"})
    missing = await user.get(str(uuid.uuid4()))
    for foreign in (
        await other_user.get(job_id),
        await other_user.cancel(job_id),
        await other_user.delete(job_id),
    ):
        assert foreign.status_code == 404
        assert foreign.json() == missing.json()
    assert missing.json()["error"]["code"] == "NOT_FOUND"


async def test_same_idempotency_key_gives_one_job_and_one_debit(user: User) -> None:
    key = f"key-{uuid.uuid4()}"
    first = await user.submit("imagine", prompt="A cosy den", key=key)
    second = await user.submit("imagine", prompt="A cosy den", key=key)
    assert first.status_code == 202
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    await user.wait_for(first.json()["id"], {"succeeded"})
    third = await user.submit("imagine", prompt="A cosy den", key=key)
    assert third.json()["id"] == first.json()["id"]
    assert (await user.usage())["used"] == 1
    reused = await user.submit("imagine", prompt="Something else entirely", key=key)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_a_replay_shows_the_job_as_get_does(user: User) -> None:
    """Once succeeded, a replay carries the variants; once deleted, neither variants nor
    links to the inputs the DELETE removed (the row alone has neither)."""
    key = f"key-{uuid.uuid4()}"
    picture = jpeg_bytes(color=(1, 2, 3))
    first = await user.submit("redesign", images=[picture], key=key, style="japandi")
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    done = await user.wait_for(job_id, {"succeeded"})

    replay = await user.submit("redesign", images=[picture], key=key, style="japandi")
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (202, "true")
    assert {k: v for k, v in replay.json().items() if k not in {"inputs", "variants"}} == {
        k: v for k, v in done.items() if k not in {"inputs", "variants"}
    }
    assert [v["idx"] for v in replay.json()["variants"]] == [v["idx"] for v in done["variants"]]
    assert len(replay.json()["inputs"]) == len(done["inputs"]) == 1

    assert (await user.delete(job_id)).status_code == 200
    after = await user.submit("redesign", images=[picture], key=key, style="japandi")
    assert after.status_code == 202, after.text
    assert (after.json()["variants"], after.json()["inputs"]) == ([], [])
    assert after.json()["updatedAt"] == (await user.get(job_id)).json()["updatedAt"]


@pytest.mark.parametrize("usage_answers", ["late", "at_once"])
async def test_the_same_key_at_the_last_generation_answers_its_job(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch, usage_answers: str
) -> None:
    """A request whose quota answer comes after its twin's debit took the last generation
    is answered with the twin's job (the key's), not 402."""
    await stack.set_plan(user.id, "price_test_one")
    if usage_answers == "late":
        quota, calls = stack.ctx.usage.quota, 0

        async def late_after_the_first(owner_id: uuid.UUID) -> object:
            nonlocal calls
            calls += 1
            if calls > 1:
                await asyncio.sleep(0.8)  # a usage service under load
            return await quota(owner_id)

        monkeypatch.setattr(stack.ctx.usage, "quota", late_after_the_first)
    key = f"key-{uuid.uuid4()}"
    twins = 2 if usage_answers == "late" else 10
    responses = await asyncio.gather(
        *(user.submit("imagine", prompt="A cosy den", key=key) for _ in range(twins))
    )
    assert [r.status_code for r in responses] == [202] * twins, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await user.usage())["used"] == 1


async def test_parallel_submits_by_one_user_admit_exactly_one(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    responses = await asyncio.gather(
        *[user.submit("imagine", prompt=f"A quiet study number {i}") for i in range(20)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1, [r.text for r in responses if r.status_code != 409]
    assert statuses.count(409) == 19
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "TOO_MANY_INFLIGHT"
    }
    winner = next(r for r in responses if r.status_code == 202).json()
    await stack.control("advance", winner["predictionId"], "succeeded")
    await user.wait_for(winner["id"], {"succeeded"})
    assert (await user.usage())["used"] == 1
