"""A run adopted from its webhook, on the real servicer (PostgreSQL, usage, S3, emulator):
the submission's answer is the job as GET shows it, and a job canceled before its
create answered is never charged."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from interior.generation.v1 import generation_pb2 as pb
from services.generation.tests.core.stack import Core

# Past the core stack's provider request timeout (5 s): the create's answer is lost.
ANSWER_LOST_MS = 7000
# Within it: the answer comes, after the run's first webhook (applied, then the job
# canceled, in the meantime: milliseconds, with seconds to spare on a loaded machine).
ANSWER_LATE_MS = 4000


async def _first_webhook(core: Core, status: str) -> tuple[bytes, str, str]:
    """Body, prediction id and named job of the first ``status`` webhook recorded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for received in core.webhooks.snapshot():
            body = json.loads(received.body)
            if body.get("status") == status:
                job = parse_qs(urlsplit(received.path).query)["job"][0]
                return received.body, body["id"], job
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {status} webhook")


async def _apply(core: Core, body: bytes, job: str) -> pb.ApplyProviderEventResponse:
    return await core.stub.ApplyProviderEvent(
        pb.ApplyProviderEventRequest(payload=body, job_id=job), timeout=30
    )


@dataclass
class Adopted:
    """A submission under way whose create's answer is late, its run adopted."""

    submitting: asyncio.Task[pb.SubmitGenerationResponse]
    job: str
    prediction: str


@asynccontextmanager
async def adopted_run(core: Core, owner: uuid.UUID, answer_delay_ms: int) -> AsyncIterator[Adopted]:
    """Submit with the create's answer ``answer_delay_ms`` late; apply the run's first
    webhook, which adopts it; the emulator is reset on the way out."""
    core.webhooks.clear()
    await asyncio.to_thread(
        core.emulator.control.set_faults, create_answer_delay_ms=answer_delay_ms
    )
    try:
        submitting = asyncio.create_task(core.submit(owner))
        body, prediction, job = await _first_webhook(core, "processing")
        await _apply(core, body, job)
        yield Adopted(submitting, job, prediction)
    finally:
        await asyncio.to_thread(core.emulator.control.reset)


async def test_a_lost_answer_whose_run_runs_answers_the_job_as_get_shows_it(core: Core) -> None:
    owner = uuid.uuid4()
    async with adopted_run(core, owner, ANSWER_LOST_MS) as run:
        answered = await run.submitting
        # Read before the emulator is reset: it would forget the run a refresh asks for.
        shown = await core.get(owner, run.job)
    assert answered.job.status == pb.JOB_STATUS_PROCESSING
    assert answered.job == shown


async def test_a_lost_answer_whose_run_succeeded_answers_with_its_render(core: Core) -> None:
    owner = uuid.uuid4()
    async with adopted_run(core, owner, ANSWER_LOST_MS) as run:
        await core.advance(run.prediction, "succeeded")
        done, _, _ = await _first_webhook(core, "succeeded")
        await _apply(core, done, run.job)
        answered = await run.submitting
    assert answered.job.status == pb.JOB_STATUS_SUCCEEDED
    assert len(answered.job.variants) == 1
    assert answered.job == await core.get(owner, run.job)
    outcome = await core.outcome(owner, run.job)
    assert (outcome.charged, outcome.refunded) == (True, False)


async def test_a_job_canceled_before_its_create_answered_is_never_charged(core: Core) -> None:
    """The run's start webhook often beats the create's answer: adopted, then canceled."""
    owner = uuid.uuid4()
    async with adopted_run(core, owner, ANSWER_LATE_MS) as run:
        await core.stub.CancelGeneration(
            pb.CancelGenerationRequest(owner_id=str(owner), job_id=run.job), timeout=30
        )
        answered = await run.submitting
    assert answered.job.status == pb.JOB_STATUS_CANCELED
    outcome = await core.outcome(owner, run.job)
    assert (outcome.charged, outcome.refunded) == (False, False)
