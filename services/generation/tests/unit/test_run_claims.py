"""A run the provider names before we do (domain/run_claims.py): adopted by its job while
the job waits for its create's answer, stopped when no job will follow it; and the
submission whose create then fails goes on with the adopted run."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]
import pytest
from structlog.testing import capture_logs

from generation.api.servicer import GenerationServicer
from generation.domain import jobs
from generation.domain.commands import cancel_generation
from generation.domain.events import Outcome, apply_prediction
from generation.domain.prediction_start import StartedJob, start_prediction
from generation.domain.provider import Prediction, ProviderStatus, ProviderUnavailable
from generation.domain.records import Job
from generation.domain.run_claims import named_job, webhook_url_for
from generation.domain.sweep import sweep_timeouts_once
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import LimitExceeded, UpstreamError
from services.generation.tests.rpc.fakes import SERVICE, BlockingServicer, unary
from services.generation.tests.unit.test_transition_accounting import (
    Provider,
    Usage,
    _context,
    _events,
    _prediction,
    _starting,
)
from services.generation.tests.unit.test_transition_accounting import Stores as _Stores

PROCESSING = ProviderStatus.PROCESSING


class Stores(_Stores):
    """The fake stores, with the attach of a job they do not hold and the processing mark."""

    async def attach_prediction(
        self, job_id: uuid.UUID, prediction_id: str, now: datetime
    ) -> Job | None:
        if job_id not in self.jobs_by_id:
            return None
        return await super().attach_prediction(job_id, prediction_id, now)

    async def mark_processing(self, job_id: uuid.UUID, started_at: datetime, now: datetime) -> bool:
        if self.jobs_by_id[job_id].status != jobs.STARTING:
            return False
        self.set_status(job_id, jobs.PROCESSING)
        return True

    async def mark_charge_waived(self, job_id: uuid.UUID) -> None:
        self.set_status(job_id, self.jobs_by_id[job_id].status, charge_state="waived")


class CountingUsage(Usage):
    """Records the debits asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.debits: list[uuid.UUID] = []

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        self.debits.append(job_id)
        return True


def test_the_webhook_url_names_the_job() -> None:
    job_id = uuid.UUID("6f1c1b7e-0a51-4a3c-9d0e-8f2b6c3d4e5f")
    assert webhook_url_for("https://hooks.example/api/v1/webhooks/replicate", job_id) == (
        f"https://hooks.example/api/v1/webhooks/replicate?job={job_id}"
    )
    # A base URL that carries a query of its own keeps it.
    assert webhook_url_for("https://hooks.example/w?tenant=a", job_id) == (
        f"https://hooks.example/w?tenant=a&job={job_id}"
    )


def test_the_job_named_in_the_signed_body_wins_over_the_url() -> None:
    """The body's ``webhook`` field is under the provider's signature, the URL's query
    is not: the URL is read only for a body without the field."""
    body_job, url_job = uuid.uuid4(), uuid.uuid4()

    def named(webhook: str | None) -> uuid.UUID | None:
        prediction = dataclasses.replace(_prediction("p", PROCESSING), webhook_url=webhook)
        return named_job(prediction, url_job)

    assert named(f"https://hooks.example/w?job={body_job}") == body_job
    assert named(None) == url_job
    assert named("https://hooks.example/w") is None
    assert named("https://hooks.example/w?job=not-a-job") is None
    # A field the body has but that names no job is not a reason to trust the URL.
    assert named("") is None


async def _webhook(stores: Stores, provider: Provider, job: Job, prediction: Prediction) -> Outcome:
    """The run's webhook, naming ``job`` in its URL, applied."""
    outcome, _ = await apply_prediction(
        _context(stores, provider), prediction, "webhook", named_job=job.id
    )
    return outcome


# 1. The webhook of a run no job has.


async def test_a_job_waiting_for_its_create_adopts_the_run_its_webhook_names() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    with capture_logs() as logs:
        outcome = await _webhook(stores, provider, job, _prediction("pred-new", PROCESSING))

    assert outcome is Outcome.APPLIED
    adopted = stores.jobs_by_id[job.id]
    assert (adopted.prediction_id, adopted.status) == ("pred-new", jobs.PROCESSING)
    assert provider.canceled == []
    [line] = _events(logs, "job.run_adopted")
    assert (line["jobId"], line["predictionId"]) == (str(job.id), "pred-new")


@pytest.mark.parametrize("status", [jobs.FAILED, jobs.CANCELED])
async def test_a_run_whose_job_ended_without_it_is_canceled(status: str) -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.set_status(job.id, status)
    with capture_logs() as logs:
        outcome = await _webhook(stores, provider, job, _prediction("pred-orphan", PROCESSING))

    assert outcome is Outcome.UNKNOWN_PREDICTION
    assert provider.canceled == ["pred-orphan"]
    assert stores.jobs_by_id[job.id].prediction_id is None
    [line] = _events(logs, "provider.orphan_run_canceled")
    assert (line["jobId"], line["orphanPredictionId"], line["status"]) == (
        str(job.id),
        "pred-orphan",
        status,
    )


async def test_an_orphan_whose_cancel_fails_is_not_logged_as_canceled() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.set_status(job.id, jobs.FAILED)

    async def refused() -> None:
        raise ProviderUnavailable("cancel timed out")

    provider.on_cancel = refused
    with capture_logs() as logs:
        await _webhook(stores, provider, job, _prediction("pred-orphan", PROCESSING))

    assert provider.canceled == ["pred-orphan"]  # asked
    assert _events(logs, "provider.orphan_run_canceled") == []
    [line] = _events(logs, "provider.orphan_cancel_failed")
    assert (line["jobId"], line["orphanPredictionId"]) == (str(job.id), "pred-orphan")


async def test_a_second_run_naming_a_job_with_a_run_is_canceled_and_changes_nothing() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.set_status(job.id, jobs.PROCESSING, prediction_id="pred-first")
    outcome = await _webhook(stores, provider, job, _prediction("pred-second", PROCESSING))

    assert outcome is Outcome.UNKNOWN_PREDICTION
    assert provider.canceled == ["pred-second"]
    assert stores.jobs_by_id[job.id].prediction_id == "pred-first"


async def test_an_ended_run_is_not_canceled_again() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.set_status(job.id, jobs.FAILED)
    finished = _prediction("pred-done", ProviderStatus.SUCCEEDED)
    assert await _webhook(stores, provider, job, finished) is Outcome.UNKNOWN_PREDICTION
    assert provider.canceled == []


async def test_a_run_naming_no_job_of_ours_is_left_alone() -> None:
    stores, provider = Stores(), Provider()
    stranger = _starting(Stores())  # another database's job
    outcome = await _webhook(stores, provider, stranger, _prediction("pred-x", PROCESSING))
    assert outcome is Outcome.UNKNOWN_PREDICTION
    assert provider.canceled == []


async def test_a_run_naming_no_job_at_all_is_left_alone() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    outcome, _ = await apply_prediction(
        _context(stores, provider), _prediction("pred-y", PROCESSING), "webhook"
    )
    assert outcome is Outcome.UNKNOWN_PREDICTION
    assert (provider.canceled, stores.jobs_by_id[job.id].prediction_id) == ([], None)


# 2. The submission whose create answers late, or never.


async def _submit(stores: Stores, provider: Provider, job: Job) -> Job | None:
    return await start_prediction(
        _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
    )


async def test_a_create_that_fails_after_its_run_was_adopted_goes_on_with_it() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def answer_lost() -> Prediction:
        await _webhook(stores, provider, job, _prediction("pred-adopted", PROCESSING))
        raise ProviderUnavailable("read timed out")

    provider.on_create = answer_lost
    with capture_logs() as logs:
        submitted = await _submit(stores, provider, job)

    assert submitted is not None
    assert (submitted.prediction_id, submitted.status) == ("pred-adopted", jobs.PROCESSING)
    row = stores.jobs_by_id[job.id]
    assert (row.status, row.charge_state) == (jobs.PROCESSING, "charged")
    assert provider.canceled == []
    assert _events(logs, "job.provider_create_failed") == []
    [line] = _events(logs, "job.create_answer_lost")
    assert line["predictionId"] == "pred-adopted"


async def test_a_create_that_fails_with_no_run_named_fails_the_job() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def answer_lost() -> Prediction:
        raise ProviderUnavailable("read timed out")

    provider.on_create = answer_lost
    with pytest.raises(UpstreamError):
        await _submit(stores, provider, job)
    assert stores.jobs_by_id[job.id].status == jobs.FAILED


@pytest.mark.parametrize(
    ("answered", "stopped"),
    [
        ("pred-adopted", []),
        # A create answered 5xx after starting a run (adopted from its webhook), and
        # its retry started another: that one is nobody's.
        ("pred-retry", ["pred-retry"]),
    ],
)
async def test_a_create_answering_after_a_run_was_adopted_keeps_the_adopted_run(
    answered: str, stopped: list[str]
) -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def answer_late() -> Prediction:
        await _webhook(stores, provider, job, _prediction("pred-adopted", PROCESSING))
        return _prediction(answered, ProviderStatus.STARTING)

    provider.on_create = answer_late
    with capture_logs() as logs:
        submitted = await _submit(stores, provider, job)

    assert submitted is not None
    assert submitted.prediction_id == "pred-adopted"
    assert stores.jobs_by_id[job.id].charge_state == "charged"
    assert provider.canceled == stopped
    duplicates = _events(logs, "provider.duplicate_run_canceled")
    assert [line["duplicatePredictionId"] for line in duplicates] == stopped


async def test_a_submission_cancelled_during_its_create_leaves_an_adopted_run_followed() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    adopted = asyncio.Event()

    async def adopted_then_hang() -> Prediction:
        await _webhook(stores, provider, job, _prediction("pred-kept", PROCESSING))
        adopted.set()
        await asyncio.Event().wait()  # the edge's deadline passes first
        raise AssertionError("never answered")

    provider.on_create = adopted_then_hang
    submitting = asyncio.create_task(_submit(stores, provider, job))
    await adopted.wait()
    submitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitting

    # Its webhooks and the sweep (which also charges it) follow it, as any run.
    row = stores.jobs_by_id[job.id]
    assert (row.status, row.prediction_id) == (jobs.PROCESSING, "pred-kept")
    assert provider.canceled == []


async def test_a_job_canceled_between_adoption_and_its_answer_is_never_debited() -> None:
    """The usual order with Replicate: the start webhook beats the create's answer."""
    stores, provider, usage = Stores(), Provider(), CountingUsage()
    job = _starting(stores)
    ctx = _context(stores, provider, usage)

    async def adopted_then_canceled_then_answered() -> Prediction:
        await _webhook(stores, provider, job, _prediction("pred-1", PROCESSING))
        await cancel_generation(ctx, job.owner_id, job.id)
        return _prediction("pred-1", ProviderStatus.STARTING)

    provider.on_create = adopted_then_canceled_then_answered
    with capture_logs() as logs:
        answered = await start_prediction(
            ctx, StartedJob(job.id, job.owner_id), "p", [], "https://w"
        )

    assert answered is not None
    assert answered.status == stores.jobs_by_id[job.id].status == jobs.CANCELED
    assert provider.canceled == ["pred-1"]  # by the cancel itself
    assert usage.debits == []
    [accepted] = _events(logs, "job.provider_accepted")
    assert accepted["status"] == jobs.CANCELED


# 3. The other writers racing an adoption.


class AdoptedWhileSweeping(Stores):
    """The run's webhook adopts it after the sweep read the job (no run yet), before the
    sweep's end."""

    async def mark_ended_without_output(self, job_id: uuid.UUID, *args: Any, **kwargs: Any) -> Any:
        if self.jobs_by_id[job_id].prediction_id is None:
            self.set_status(job_id, jobs.STARTING, prediction_id="pred-adopted")
        return await super().mark_ended_without_output(job_id, *args, **kwargs)


async def test_the_sweep_does_not_end_a_job_whose_run_was_adopted_since_it_read_it() -> None:
    stores, provider = AdoptedWhileSweeping(), Provider()
    job = _starting(stores)  # starting without a run: an unsubmitted candidate
    stores.overdue = [job]
    with capture_logs() as logs:
        await sweep_timeouts_once(_context(stores, provider))

    # Followed from now on (within the overall timeout), its run left to make its render.
    row = stores.jobs_by_id[job.id]
    assert (row.status, row.prediction_id) == (jobs.STARTING, "pred-adopted")
    assert provider.canceled == []
    assert _events(logs, "job.transition") == []


class AnsweredAfterTheLookup(Stores):
    """The create's answer attaches the run between the webhook's lookup by prediction
    id (which found no job) and its claim."""

    job: Job

    async def get_by_prediction_id(self, prediction_id: str) -> Job | None:
        found = await super().get_by_prediction_id(prediction_id)
        await super().attach_prediction(self.job.id, prediction_id, datetime.now())
        return found


async def test_a_webhook_racing_the_answer_never_cancels_the_jobs_own_run() -> None:
    stores, provider = AnsweredAfterTheLookup(), Provider()
    stores.job = _starting(stores)
    outcome = await _webhook(stores, provider, stores.job, _prediction("pred-own", PROCESSING))
    assert outcome is Outcome.APPLIED
    assert provider.canceled == []
    assert stores.jobs_by_id[stores.job.id].prediction_id == "pred-own"


class RefusingUsage(Usage):
    """The plan shrank after admission: the debit is refused."""

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        raise LimitExceeded()


async def test_an_adopted_run_that_made_its_render_before_a_refused_debit_is_waived() -> None:
    """A lost answer (10 s) and a run that takes as long: the render stands and answers
    202, never charged past the plan, never a 402 beside a render."""
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def answer_lost() -> Prediction:
        await _webhook(stores, provider, job, _prediction("pred-a", PROCESSING))
        stores.set_status(job.id, jobs.SUCCEEDED)  # its success webhook came meanwhile
        raise ProviderUnavailable("read timed out")

    provider.on_create = answer_lost
    with capture_logs() as logs:
        answered = await start_prediction(
            _context(stores, provider, RefusingUsage()),
            StartedJob(job.id, job.owner_id),
            "p",
            [],
            "https://w",
        )

    assert answered is not None
    assert answered.status == jobs.SUCCEEDED
    row = stores.jobs_by_id[job.id]
    assert (row.status, row.charge_state) == (jobs.SUCCEEDED, "waived")
    assert provider.canceled == []
    assert _events(logs, "job.debit_refused") == []
    [waived] = _events(logs, "ledger.charge_waived")
    assert waived["jobId"] == str(job.id)


class ParsingProvider(Provider):
    """Any payload is a running prediction named by its text, without a webhook field."""

    def parse_event(self, payload: bytes) -> Prediction:
        return _prediction(payload.decode(), PROCESSING)


def test_the_servicer_hands_the_job_the_url_names_to_the_claim() -> None:
    stores, provider = Stores(), ParsingProvider()
    job = _starting(stores)
    servicer = GenerationServicer(_context(stores, provider), feed=None)  # type: ignore[arg-type]
    server = grpc_testing.server_from_dictionary(
        {SERVICE: BlockingServicer(servicer)}, grpc_testing.strict_real_time()
    )
    request = pb.ApplyProviderEventRequest(payload=b"pred-url", job_id=str(job.id))
    response, code, _ = unary(server, "ApplyProviderEvent", request)

    assert code == grpc.StatusCode.OK
    assert response.outcome == pb.EVENT_OUTCOME_APPLIED
    row = stores.jobs_by_id[job.id]
    assert (row.prediction_id, row.status) == ("pred-url", jobs.PROCESSING)
