"""A job transition is logged (with ownerId, jobId, predictionId and status as the row is
now) and counted in ``generation_job_transitions_total`` exactly when the write that
makes it changed the row: never for a write that lost a race, never twice, never
silently. The sweep's per-action counter moves where each action happens."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from generation.domain import jobs
from generation.domain.commands import cancel_generation
from generation.domain.context import GenerationContext
from generation.domain.events import apply_prediction
from generation.domain.prediction_start import StartedJob, start_prediction
from generation.domain.provider import (
    Prediction,
    PredictionRequest,
    ProviderStatus,
    ProviderUnavailable,
)
from generation.domain.records import ChargeUpdate, Job, PendingFiles
from generation.domain.states import JobStatus
from generation.domain.sweep import sweep_once
from kit.errors import LimitExceeded, ServiceUnavailable, UpstreamError
from services.generation.tests.rpc.fakes import FakeStores, fake_context, make_job

CONTEXT_KEYS = ("ownerId", "jobId", "predictionId", "status")


def _transitions(status: str, source: str) -> float:
    value = REGISTRY.get_sample_value(
        "generation_job_transitions_total", {"status": status, "source": source}
    )
    return value or 0.0


def _sweep_jobs(action: str) -> float:
    return REGISTRY.get_sample_value("generation_sweep_jobs_total", {"action": action}) or 0.0


@contextmanager
def counted(*labels: tuple[str, str]) -> Iterator[dict[tuple[str, str], float]]:
    """How much each (status, source) transition moved while the block ran."""
    before = {label: _transitions(*label) for label in labels}
    moved: dict[tuple[str, str], float] = {}
    yield moved
    moved.update({label: _transitions(*label) - before[label] for label in labels})


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def _assert_context(entry: MutableMapping[str, Any]) -> None:
    assert all(key in entry for key in CONTEXT_KEYS), entry


def _prediction(prediction_id: str, status: ProviderStatus) -> Prediction:
    return Prediction(prediction_id, status, (), False, None, None, None)


class Stores(FakeStores):
    """The fake stores, with what submissions, cancels and the sweep also write."""

    def __init__(self) -> None:
        super().__init__()
        self.attach_fails = False
        # Set: attaches wait for it (a statement under way when the caller gives up).
        self.attach_gate: asyncio.Event | None = None
        self.attaching = asyncio.Event()
        self.overdue: list[Job] = []
        self.to_settle: list[Job] = []
        self.settle_query_fails = False

    def set_status(self, job_id: uuid.UUID, status: str, **fields: Any) -> None:
        self.jobs_by_id[job_id] = dataclasses.replace(
            self.jobs_by_id[job_id], status=status, **fields
        )

    async def attach_prediction(
        self, job_id: uuid.UUID, prediction_id: str, now: datetime
    ) -> Job | None:
        self.attaching.set()
        if self.attach_gate is not None:
            await self.attach_gate.wait()
        if self.attach_fails:
            raise ConnectionError("the database went away")
        job = self.jobs_by_id[job_id]
        if job.status != JobStatus.STARTING or job.prediction_id is not None:
            return None
        self.jobs_by_id[job_id] = dataclasses.replace(job, prediction_id=prediction_id)
        return self.jobs_by_id[job_id]

    async def mark_charged(self, job_id: uuid.UUID) -> ChargeUpdate:
        job = dataclasses.replace(self.jobs_by_id[job_id], charge_state="charged")
        self.jobs_by_id[job_id] = job
        return ChargeUpdate(job=job, refund_due=False)

    async def inflight_needing_poll(
        self, older_than: datetime, poll_before: datetime, limit: int
    ) -> Sequence[Job]:
        return []

    async def overdue_inflight(
        self, created_before: datetime, unsubmitted_before: datetime, limit: int
    ) -> Sequence[Job]:
        return self.overdue

    async def needing_settlement(self, settle_before: datetime, limit: int) -> Sequence[Job]:
        if self.settle_query_fails:
            raise ConnectionError("the database went away")
        return self.to_settle

    async def files_pending_removal(
        self, job_id: uuid.UUID | None, limit: int, now: datetime
    ) -> Sequence[PendingFiles]:
        return []

    async def inputs_pending_removal(
        self, job_ids: list[uuid.UUID] | None, limit: int
    ) -> Sequence[Job]:
        return []


class Provider:
    """A provider whose calls run what the test hands them (a race, a hold, a failure)."""

    def __init__(self) -> None:
        self.on_create: Any = None
        self.on_cancel: Any = None
        self.canceled: list[str] = []

    async def create_prediction(self, request: PredictionRequest) -> Prediction:
        assert self.on_create is not None
        result: Prediction = await self.on_create()
        return result

    async def cancel_prediction(self, prediction_id: str) -> Prediction:
        self.canceled.append(prediction_id)
        if self.on_cancel is not None:
            await self.on_cancel()
        return _prediction(prediction_id, ProviderStatus.CANCELED)


class Usage:
    def __init__(self) -> None:
        self.on_debit: Any = None

    async def debit(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> bool:
        if self.on_debit is not None:
            await self.on_debit()
        return True

    async def credit(self, owner_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> bool:
        return True


def _context(stores: Stores, provider: Provider, usage: Usage | None = None) -> GenerationContext:
    return dataclasses.replace(
        fake_context(stores),
        provider=provider,  # type: ignore[arg-type]
        usage=usage or Usage(),  # type: ignore[arg-type]
    )


def _starting(stores: Stores) -> Job:
    return stores.add(make_job(uuid.uuid4()))


# 1. The submission's own ends (domain/prediction_start.py).


async def test_a_submission_cancelled_during_the_create_logs_and_counts_its_failure() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    asked = asyncio.Event()

    async def hold() -> Prediction:
        asked.set()
        await asyncio.Event().wait()  # the edge's deadline passes first
        raise AssertionError("never answered")

    provider.on_create = hold
    with counted((jobs.FAILED, "submit")) as moved, capture_logs() as logs:
        submitting = asyncio.create_task(
            start_prediction(
                _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
            )
        )
        await asked.wait()
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting

    assert stores.jobs_by_id[job.id].status == jobs.FAILED
    [line] = _events(logs, "job.submit_interrupted")
    _assert_context(line)
    assert (line["jobId"], line["predictionId"], line["status"]) == (str(job.id), None, "failed")
    assert moved[(jobs.FAILED, "submit")] == 1


async def test_a_prediction_that_cannot_be_attached_ends_the_job_logged_and_counted() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.attach_fails = True

    async def accepted() -> Prediction:
        return _prediction("pred-lost", ProviderStatus.STARTING)

    provider.on_create = accepted
    with (
        counted((jobs.FAILED, "submit")) as moved,
        capture_logs() as logs,
        pytest.raises(ConnectionError),
    ):
        await start_prediction(
            _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
        )

    assert provider.canceled == ["pred-lost"]
    assert stores.jobs_by_id[job.id].status == jobs.FAILED
    [line] = _events(logs, "job.submit_interrupted")
    _assert_context(line)
    assert (line["predictionId"], line["status"]) == ("pred-lost", "failed")
    assert moved[(jobs.FAILED, "submit")] == 1


async def _cancelled_while_attaching(stores: Stores, provider: Provider, job: Job) -> None:
    """A submission whose caller gives up while the accepted run is being attached."""

    async def accepted() -> Prediction:
        return _prediction("pred-mid-attach", ProviderStatus.STARTING)

    provider.on_create = accepted
    stores.attach_gate = asyncio.Event()
    submitting = asyncio.create_task(
        start_prediction(
            _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
        )
    )
    await stores.attaching.wait()
    submitting.cancel()
    await asyncio.sleep(0)
    stores.attach_gate.set()
    with pytest.raises(asyncio.CancelledError):
        await submitting


async def test_a_submission_cancelled_while_attaching_leaves_its_run_attached() -> None:
    """The client left as the run was being attached: the attach still ends, so the run
    is followed (webhooks, the sweep that charges it), not left for nobody while the
    owner's slot stays held until the sweep gives the job up."""
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    await _cancelled_while_attaching(stores, provider, job)

    assert stores.jobs_by_id[job.id].prediction_id == "pred-mid-attach"
    assert stores.jobs_by_id[job.id].status == jobs.STARTING
    assert provider.canceled == []


async def test_a_submission_cancelled_while_attaching_to_a_canceled_job_stops_the_run() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.set_status(job.id, jobs.CANCELED)  # the user's cancel committed first

    with capture_logs() as logs:
        await _cancelled_while_attaching(stores, provider, job)

    assert provider.canceled == ["pred-mid-attach"]
    [line] = _events(logs, "job.canceled_during_submit")
    _assert_context(line)
    assert line["status"] == "canceled"


async def test_a_submission_cancelled_while_an_attach_fails_ends_the_job() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)
    stores.attach_fails = True

    await _cancelled_while_attaching(stores, provider, job)

    assert provider.canceled == ["pred-mid-attach"]
    assert stores.jobs_by_id[job.id].status == jobs.FAILED


async def test_a_create_failure_after_the_user_canceled_is_logged_as_it_is_and_not_counted() -> (
    None
):
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def canceled_meanwhile() -> Prediction:
        stores.set_status(job.id, jobs.CANCELED)  # the user's cancel commits first
        raise ProviderUnavailable("503")

    provider.on_create = canceled_meanwhile
    with (
        counted((jobs.FAILED, "submit")) as moved,
        capture_logs() as logs,
        pytest.raises(UpstreamError),
    ):
        await start_prediction(
            _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
        )

    assert stores.jobs_by_id[job.id].status == jobs.CANCELED
    [line] = _events(logs, "job.provider_create_failed")
    _assert_context(line)
    assert line["status"] == "canceled"
    assert moved[(jobs.FAILED, "submit")] == 0


async def test_a_job_canceled_while_its_prediction_was_created_says_its_status() -> None:
    stores, provider = Stores(), Provider()
    job = _starting(stores)

    async def canceled_meanwhile() -> Prediction:
        stores.set_status(job.id, jobs.CANCELED)  # the user's cancel commits first
        return _prediction("pred-late", ProviderStatus.STARTING)

    provider.on_create = canceled_meanwhile
    with capture_logs() as logs:
        started = await start_prediction(
            _context(stores, provider), StartedJob(job.id, job.owner_id), "p", [], "https://w"
        )

    assert started is None
    assert provider.canceled == ["pred-late"]
    [line] = _events(logs, "job.canceled_during_submit")
    _assert_context(line)
    assert (line["predictionId"], line["status"]) == ("pred-late", "canceled")


async def test_a_refused_debit_after_the_user_canceled_is_not_counted_as_a_failure() -> None:
    stores, provider, usage = Stores(), Provider(), Usage()
    job = _starting(stores)

    async def accepted() -> Prediction:
        return _prediction("pred-1", ProviderStatus.STARTING)

    async def refused_after_cancel() -> None:
        stores.set_status(job.id, jobs.CANCELED)
        raise LimitExceeded()

    provider.on_create = accepted
    usage.on_debit = refused_after_cancel
    with (
        counted((jobs.FAILED, "submit")) as moved,
        capture_logs() as logs,
        pytest.raises(LimitExceeded),
    ):
        await start_prediction(
            _context(stores, provider, usage),
            StartedJob(job.id, job.owner_id),
            "p",
            [],
            "https://w",
        )

    [line] = _events(logs, "job.debit_refused")
    _assert_context(line)
    assert (line["predictionId"], line["status"]) == ("pred-1", "canceled")
    assert moved[(jobs.FAILED, "submit")] == 0
    assert provider.canceled == ["pred-1"]  # its run stopped all the same


async def test_a_refused_debit_fails_the_job_and_stops_its_run() -> None:
    """No run past the plan: the provider accepted, the debit was refused (the last
    generation went to another of the owner's jobs meanwhile), so the job ends failed,
    uncharged, and the run it started is canceled at the provider."""
    stores, provider, usage = Stores(), Provider(), Usage()
    job = _starting(stores)

    async def accepted() -> Prediction:
        return _prediction("pred-1", ProviderStatus.STARTING)

    async def refused() -> None:
        raise LimitExceeded()

    provider.on_create = accepted
    usage.on_debit = refused
    with counted((jobs.FAILED, "submit")) as moved, pytest.raises(LimitExceeded):
        await start_prediction(
            _context(stores, provider, usage),
            StartedJob(job.id, job.owner_id),
            "p",
            [],
            "https://w",
        )

    assert provider.canceled == ["pred-1"]
    ended = stores.jobs_by_id[job.id]
    assert (ended.status, ended.error_code) == (jobs.FAILED, "LIMIT_EXCEEDED")
    assert ended.charge_state != "charged"
    assert moved[(jobs.FAILED, "submit")] == 1


# 2. The owner's cancel (domain/commands.py).


async def test_a_double_clicked_cancel_is_logged_and_counted_once() -> None:
    stores, provider = Stores(), Provider()
    job = stores.add(make_job(uuid.uuid4(), jobs.PROCESSING, prediction_id="pred-2"))
    both_asked = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        if len(provider.canceled) == 2:
            both_asked.set()
        await release.wait()

    provider.on_cancel = hold
    ctx = _context(stores, provider)
    with counted((jobs.CANCELED, "user")) as moved, capture_logs() as logs:
        clicks = [
            asyncio.create_task(cancel_generation(ctx, job.owner_id, job.id)) for _ in range(2)
        ]
        await both_asked.wait()  # both read the job in flight before either ended it
        release.set()
        views = await asyncio.gather(*clicks)

    assert [view.status for view in views] == ["canceled", "canceled"]
    [line] = _events(logs, "job.canceled")
    _assert_context(line)
    assert (line["predictionId"], line["status"]) == ("pred-2", "canceled")
    assert moved[(jobs.CANCELED, "user")] == 1


async def test_a_cancel_that_the_canceled_webhook_beat_is_not_told_or_counted_again() -> None:
    stores, provider = Stores(), Provider()
    job = stores.add(make_job(uuid.uuid4(), jobs.PROCESSING, prediction_id="pred-3"))
    ctx = _context(stores, provider)

    async def webhook_first() -> None:
        await apply_prediction(ctx, _prediction("pred-3", ProviderStatus.CANCELED), "webhook")

    provider.on_cancel = webhook_first
    with (
        counted((jobs.CANCELED, "user"), (jobs.CANCELED, "webhook")) as moved,
        capture_logs() as logs,
    ):
        view = await cancel_generation(ctx, job.owner_id, job.id)

    assert view.status == jobs.CANCELED
    assert _events(logs, "job.canceled") == []
    assert [line["status"] for line in _events(logs, "job.transition")] == ["canceled"]
    assert moved == {(jobs.CANCELED, "user"): 0, (jobs.CANCELED, "webhook"): 1}


async def test_a_cancel_logs_the_prediction_attached_while_it_ran() -> None:
    class AttachedMeanwhile(Stores):
        async def mark_ended_without_output(
            self, job_id: uuid.UUID, *args: Any, **kwargs: Any
        ) -> Any:
            # The submission's attach commits between the cancel's read and its end.
            self.set_status(job_id, jobs.STARTING, prediction_id="pred-4")
            return await super().mark_ended_without_output(job_id, *args, **kwargs)

    stores, provider = AttachedMeanwhile(), Provider()
    job = _starting(stores)
    with counted((jobs.CANCELED, "user")) as moved, capture_logs() as logs:
        view = await cancel_generation(_context(stores, provider), job.owner_id, job.id)

    assert (view.status, view.prediction_id) == (jobs.CANCELED, "pred-4")
    assert provider.canceled == ["pred-4"]
    [line] = _events(logs, "job.canceled")
    _assert_context(line)
    assert (line["predictionId"], line["status"]) == ("pred-4", "canceled")
    assert moved[(jobs.CANCELED, "user")] == 1


# 4. The sweep (domain/sweep.py).


async def test_a_debit_the_usage_service_defers_is_not_counted_settled() -> None:
    stores, usage = Stores(), Usage()
    job = stores.add(make_job(uuid.uuid4(), jobs.SUCCEEDED, prediction_id="pred-5"))
    stores.to_settle = [job]

    async def outage() -> None:
        raise ServiceUnavailable()

    usage.on_debit = outage
    before = _sweep_jobs("settled")
    counts = await sweep_once(_context(stores, Provider(), usage))

    assert counts["settled"] == 0
    assert _sweep_jobs("settled") - before == 0
    assert stores.jobs_by_id[job.id].charge_state == "none"


async def test_a_debit_done_by_the_sweep_is_counted_settled() -> None:
    stores = Stores()
    job = stores.add(make_job(uuid.uuid4(), jobs.SUCCEEDED, prediction_id="pred-6"))
    stores.to_settle = [job]
    before = _sweep_jobs("settled")
    counts = await sweep_once(_context(stores, Provider()))

    assert counts["settled"] == 1
    assert _sweep_jobs("settled") - before == 1


async def test_jobs_timed_out_are_counted_even_when_a_later_step_of_the_pass_fails() -> None:
    stores, provider = Stores(), Provider()
    ctx = _context(stores, provider)
    overdue = make_job(
        uuid.uuid4(),
        jobs.PROCESSING,
        prediction_id="pred-7",
        created_at=ctx.clock.now() - timedelta(hours=1),
    )
    stores.overdue = [stores.add(overdue)]
    stores.settle_query_fails = True
    before = _sweep_jobs("timed_out")
    with counted((jobs.FAILED, "sweep")) as moved, pytest.raises(ConnectionError):
        await sweep_once(ctx)

    assert stores.jobs_by_id[overdue.id].status == jobs.FAILED
    assert moved[(jobs.FAILED, "sweep")] == 1
    assert _sweep_jobs("timed_out") - before == 1


async def test_a_result_whose_caller_left_still_ends_and_its_failure_is_logged() -> None:
    """A webhook's caller gone (the gateway's deadline) while its result was applied: the
    application still runs to its end (files must not land after a DELETE), and when
    that end fails nobody else hears of it, so it is logged."""
    stores, provider = Stores(), Provider()
    job = stores.add(make_job(uuid.uuid4(), jobs.PROCESSING, prediction_id="pred-gone"))
    ending, gate = asyncio.Event(), asyncio.Event()

    async def ends_then_fails(*args: Any, **kwargs: Any) -> Any:
        ending.set()
        await gate.wait()
        raise ConnectionError("the database went away")

    stores.mark_ended_without_output = ends_then_fails  # type: ignore[method-assign]
    ctx = _context(stores, provider)
    # Succeeded without an output: the job is ended failed (NO_OUTPUT).
    applying = asyncio.ensure_future(
        apply_prediction(ctx, _prediction("pred-gone", ProviderStatus.SUCCEEDED), "webhook")
    )
    with capture_logs() as logs:
        await ending.wait()
        applying.cancel()
        await asyncio.sleep(0)
        assert not applying.done()  # it waits for the end it started
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await applying

    [line] = _events(logs, "job.finish_after_cancel_failed")
    _assert_context(line)
    assert (line["jobId"], line["error"]) == (str(job.id), "ConnectionError")
