"""A run adopted from its webhook, on the real servicer (PostgreSQL, usage, S3, emulator):
the submission's answer is the job as GET shows it, and a job canceled before its
create answered is never charged."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
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


async def _submitting_with_answer_delay(core: Core, owner: uuid.UUID, delay_ms: int) -> Any:
    core.webhooks.clear()
    await asyncio.to_thread(core.emulator.control.set_faults, create_answer_delay_ms=delay_ms)
    return asyncio.create_task(core.submit(owner))


async def test_a_lost_answer_whose_run_runs_answers_the_job_as_get_shows_it(core: Core) -> None:
    owner = uuid.uuid4()
    try:
        submitting = await _submitting_with_answer_delay(core, owner, ANSWER_LOST_MS)
        body, _, job = await _first_webhook(core, "processing")
        await _apply(core, body, job)
        answered = await submitting
        # Read before the emulator is reset: it would forget the run a refresh asks for.
        shown = await core.get(owner, job)
    finally:
        await asyncio.to_thread(core.emulator.control.reset)
    assert answered.job.status == pb.JOB_STATUS_PROCESSING
    assert answered.job == shown


async def test_a_lost_answer_whose_run_succeeded_answers_with_its_render(core: Core) -> None:
    owner = uuid.uuid4()
    try:
        submitting = await _submitting_with_answer_delay(core, owner, ANSWER_LOST_MS)
        body, prediction, job = await _first_webhook(core, "processing")
        await _apply(core, body, job)
        await core.advance(prediction, "succeeded")
        done, _, _ = await _first_webhook(core, "succeeded")
        await _apply(core, done, job)
        answered = await submitting
    finally:
        await asyncio.to_thread(core.emulator.control.reset)
    assert answered.job.status == pb.JOB_STATUS_SUCCEEDED
    assert len(answered.job.variants) == 1
    assert answered.job == await core.get(owner, job)
    outcome = await core.outcome(owner, job)
    assert (outcome.charged, outcome.refunded) == (True, False)


async def test_a_job_canceled_before_its_create_answered_is_never_charged(core: Core) -> None:
    """The run's start webhook often beats the create's answer: adopted, then canceled."""
    owner = uuid.uuid4()
    try:
        submitting = await _submitting_with_answer_delay(core, owner, ANSWER_LATE_MS)
        body, _, job = await _first_webhook(core, "processing")
        await _apply(core, body, job)
        await core.stub.CancelGeneration(
            pb.CancelGenerationRequest(owner_id=str(owner), job_id=job), timeout=30
        )
        answered = await submitting
    finally:
        await asyncio.to_thread(core.emulator.control.reset)
    assert answered.job.status == pb.JOB_STATUS_CANCELED
    outcome = await core.outcome(owner, job)
    assert (outcome.charged, outcome.refunded) == (False, False)
